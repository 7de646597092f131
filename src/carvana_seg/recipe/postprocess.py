"""Mask post-processing options; tuning keeps one only if it raises CV Dice on OOF."""

from __future__ import annotations

import cv2
import numpy as np

from carvana_seg.config import ConfigError

MIN_AREA_FRACTION = 0.001  # `min_area` drops components smaller than this share of the image


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return count, labels, stats[:, cv2.CC_STAT_AREA]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest foreground component (one car per photo)."""
    count, labels, areas = _components(mask)
    if count <= 2:
        return mask
    return (labels == 1 + int(np.argmax(areas[1:]))).astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that do not touch the image border."""
    count, labels, _ = _components(1 - mask)
    if count <= 1:
        return mask
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    holes = ~np.isin(labels, border) & (labels > 0)
    return (mask.astype(bool) | holes).astype(np.uint8)


def min_area(mask: np.ndarray) -> np.ndarray:
    """Drop small foreground specks."""
    count, labels, areas = _components(mask)
    keep = areas >= MIN_AREA_FRACTION * mask.size
    keep[0] = False
    return keep[labels].astype(np.uint8)


POSTPROCESS = {"largest_component": largest_component, "fill_holes": fill_holes, "min_area": min_area}


def apply_postprocess(mask: np.ndarray, steps: list[str]) -> np.ndarray:
    for step in steps:
        if step not in POSTPROCESS:
            raise ConfigError(f"post-processing {step!r}: available {', '.join(POSTPROCESS)}")
        mask = POSTPROCESS[step](mask)
    return mask
