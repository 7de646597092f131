"""The per-photo prediction chain of commit 061a38d, kept only as the reference that
tests/test_chain.py and benchmarks/predict.py compare recipe/chain.py with: per photo, on
the CPU, in numpy and OpenCV, every member upsampled to full size as uint8, the photo
decoded a second time for the guide, post-processing with per-pixel np.isin."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from carvana_seg.data.layout import read_image
from carvana_seg.ops.rle import rle_encode

SUBSAMPLE = 2


def upsample_probs(prob_u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if prob_u8.shape == tuple(size):
        return prob_u8
    return cv2.resize(prob_u8, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def blend_upsampled(levels: list[np.ndarray], weights: list[float], size: tuple[int, int]) -> np.ndarray:
    acc = np.zeros(size, dtype=np.float32)
    for prob_u8, weight in zip(levels, weights):
        if weight:
            acc += weight * upsample_probs(prob_u8, size).astype(np.float32)
    return np.rint(acc / sum(weights)).astype(np.uint8)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int = SUBSAMPLE) -> np.ndarray:
    height, width = guide.shape
    small = (max(1, width // subsample), max(1, height // subsample))
    guide_s = cv2.resize(guide, small, interpolation=cv2.INTER_AREA)
    src_s = cv2.resize(src, small, interpolation=cv2.INTER_AREA)
    side = 2 * max(1, radius // subsample) + 1

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (side, side))

    mean_g, mean_s = mean(guide_s), mean(src_s)
    a = (mean(guide_s * src_s) - mean_g * mean_s) / (mean(guide_s * guide_s) - mean_g * mean_g + eps)
    b = mean_s - a * mean_g
    a_full = cv2.resize(mean(a), (width, height), interpolation=cv2.INTER_LINEAR)
    b_full = cv2.resize(mean(b), (width, height), interpolation=cv2.INTER_LINEAR)
    return a_full * guide + b_full


def refine_levels(levels: np.ndarray, guide_path: Path, refine: dict | None) -> np.ndarray:
    if not refine:
        return levels
    guide = cv2.cvtColor(read_image(guide_path), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    refined = guided_filter(guide, levels.astype(np.float32) / 255, refine["radius"], refine["eps"])
    return np.clip(np.rint(refined * 255), 0, 255).astype(np.uint8)


def _components(mask: np.ndarray):
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return count, labels, stats[:, cv2.CC_STAT_AREA]


def largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, areas = _components(mask)
    if count <= 2:
        return mask
    return (labels == 1 + int(np.argmax(areas[1:]))).astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    count, labels, _ = _components(1 - mask)
    if count <= 1:
        return mask
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    holes = ~np.isin(labels, border) & (labels > 0)
    return (mask.astype(bool) | holes).astype(np.uint8)


def min_area(mask: np.ndarray, fraction: float = 0.001) -> np.ndarray:
    count, labels, areas = _components(mask)
    keep = areas >= fraction * mask.size
    keep[0] = False
    return keep[labels].astype(np.uint8)


POSTPROCESS = {"largest_component": largest_component, "fill_holes": fill_holes, "min_area": min_area}


def old_levels(levels: list[np.ndarray], weights: list[float], size: tuple[int, int], photo: Path, refine: dict | None) -> np.ndarray:
    """Blend at original size and refine: the old chain's levels of one photo."""
    return refine_levels(blend_upsampled(levels, weights, size), photo, refine)


def old_mask(levels: list[np.ndarray], weights: list[float], size: tuple[int, int], photo: Path, refine: dict | None, threshold_level: int, steps: list[str]) -> np.ndarray:
    mask = (old_levels(levels, weights, size, photo, refine) >= threshold_level).astype(np.uint8)
    for step in steps:
        mask = POSTPROCESS[step](mask)
    return mask


def old_encode(levels: list[np.ndarray], weights: list[float], size: tuple[int, int], photo: Path, refine: dict | None, threshold_level: int, steps: list[str]) -> str:
    return rle_encode(old_mask(levels, weights, size, photo, refine, threshold_level, steps))
