"""Tuning keeps a step only if it adds more than tune.MIN_GAIN of CV."""

from __future__ import annotations

import numpy as np
import pytest

from carvana_seg.ops.metrics import HALF
from carvana_seg.recipe.tune import MIN_GAIN, kept_postprocess, with_best_threshold
from carvana_seg.recipe.recipe import Member, Recipe


def one_image(false_positives: int) -> tuple[np.ndarray, np.ndarray]:
    """10,000 car pixels at level 200 and a few background pixels at level 130: every level
    from 131 up is perfect, 0.5 (level 128) pays for the false positives."""
    positive, negative = np.zeros((1, 256)), np.zeros((1, 256))
    positive[0, 200], negative[0, 130] = 10_000, false_positives
    return positive, negative


RECIPE = Recipe("r", (Member("e", "runs", 1.0, 2),), "data")


@pytest.mark.parametrize(("false_positives", "kept_level"), [(1, HALF), (3, 131)])
def test_a_tuned_threshold_is_kept_only_above_the_minimum_gain(false_positives, kept_level):
    # 1 false positive: 0.5 scores 20000/20001, a gain of 5e-5 for tuning: too little, 0.5 stays.
    # 3: 20000/20003, a gain of 1.5e-4: the tuned level (the first perfect one) is kept.
    gain = 1 - 20_000 / (20_000 + false_positives)
    assert (gain > MIN_GAIN) == (kept_level != HALF)
    recipe, scores = with_best_threshold(RECIPE, *one_image(false_positives))
    assert recipe.threshold_level == scores["threshold_level"] == kept_level
    assert scores["dice_at_threshold"] == pytest.approx(1.0 if kept_level != HALF else 1 - gain)


def by_subset(gains: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], np.ndarray]:
    base = 0.98
    return {steps: np.full(4, base + gain) for steps, gain in gains.items()}


def test_fill_holes_kept_for_a_hundred_thousandth_is_dropped():
    # What tuning once kept: largest component +0.001, and fill holes another +0.00001.
    scores = by_subset({(): 0.0, ("largest_component",): 0.001, ("fill_holes",): 0.0, ("largest_component", "fill_holes"): 0.00101})
    assert kept_postprocess(scores) == ("largest_component",)


def test_each_kept_step_adds_more_than_the_minimum_to_the_others():
    both = by_subset({(): 0.0, ("largest_component",): 0.0005, ("fill_holes",): 0.0005, ("largest_component", "fill_holes"): 0.0005 + 2 * MIN_GAIN})
    assert kept_postprocess(both) == ("largest_component", "fill_holes")
    nothing = by_subset({(): 0.0, ("largest_component",): MIN_GAIN / 2, ("fill_holes",): 0.0, ("largest_component", "fill_holes"): MIN_GAIN})
    assert kept_postprocess(nothing) == ()  # each step alone adds at most MIN_GAIN
