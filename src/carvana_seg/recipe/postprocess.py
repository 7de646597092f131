"""Mask post-processing options; tuning keeps one only if it raises CV Dice on OOF.

Each step maps a mask's runs (ops/rle.py) to new runs, with 8-connected components
as OpenCV counts them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from carvana_seg.ops.rle import Runs

MIN_AREA_FRACTION = 0.001  # `min_area` drops components smaller than this share of the image


def _areas(runs: Runs) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, label of each run, area of each component)."""
    count, labels = runs.components()
    return count, labels, np.bincount(labels, weights=runs.ends - runs.starts, minlength=count)


def largest_component(runs: Runs) -> Runs:
    """Keep the largest foreground component (one car per photo); the first in raster order on a tie."""
    count, labels, areas = _areas(runs)
    return runs if count <= 1 else runs.subset(labels == int(np.argmax(areas)))


def fill_holes(runs: Runs) -> Runs:
    """Fill background regions that do not touch the image border."""
    background = runs.complement()
    count, labels = background.components()
    border = (background.rows == 0) | (background.rows == runs.height - 1) | (background.starts == 0) | (background.ends == runs.width)
    outside = np.zeros(count, bool)
    outside[labels[border]] = True
    return background.subset(outside[labels]).complement()


def min_area(runs: Runs) -> Runs:
    """Drop small foreground specks."""
    _, labels, areas = _areas(runs)
    return runs.subset(areas[labels] >= MIN_AREA_FRACTION * runs.height * runs.width)


POSTPROCESS = {"largest_component": largest_component, "fill_holes": fill_holes, "min_area": min_area}


def apply_postprocess(runs: Runs, steps: Sequence[str]) -> Runs:
    """Apply the named steps in order. A recipe's steps are checked when the recipe is read
    (recipe.Recipe, key `postprocess`); an unknown name here is a caller's bug."""
    for step in steps:
        if step not in POSTPROCESS:
            raise ValueError(f"unknown post-processing step {step!r}; available: {', '.join(POSTPROCESS)}")
        runs = POSTPROCESS[step](runs)
    return runs
