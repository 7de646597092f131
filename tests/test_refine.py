"""Edge refinement: the guided filter moves a misplaced outline onto the photo's edge."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from carvana_seg.data.layout import DataError
from carvana_seg.recipe.refine import guided_filter, refine_levels

HEIGHT, WIDTH, EDGE = 120, 200, 100  # the photo's edge: columns >= EDGE are the car


def photo() -> np.ndarray:
    guide = np.full((HEIGHT, WIDTH), 0.25, np.float32)
    guide[:, EDGE:] = 0.75
    return guide


def blurred_prediction(shift: int) -> np.ndarray:
    """A soft map whose 0.5 crossing sits `shift` columns left of the photo's edge."""
    x = np.arange(WIDTH, dtype=np.float32)
    return np.tile(1 / (1 + np.exp(-(x - (EDGE - shift)) / 3)), (HEIGHT, 1)).astype(np.float32)


def wrong_columns(probs: np.ndarray) -> int:
    truth = np.zeros((HEIGHT, WIDTH), bool)
    truth[:, EDGE:] = True
    return int(((probs >= 0.5) != truth).any(axis=0).sum())


@pytest.mark.parametrize("subsample", [1, 2])
def test_guided_filter_snaps_the_outline_to_the_photo_edge(subsample):
    probs = blurred_prediction(shift=5)
    assert wrong_columns(probs) == 5
    refined = guided_filter(photo(), probs, radius=8, eps=1e-3, subsample=subsample)
    assert wrong_columns(refined) <= 1


def test_flat_photo_leaves_a_smooth_map_nearly_unchanged():
    probs = blurred_prediction(shift=0)
    refined = guided_filter(np.full((HEIGHT, WIDTH), 0.5, np.float32), probs, radius=4, eps=1e-3, subsample=1)
    assert wrong_columns(refined) == 0  # no photo edge to follow: the model's outline stays


def test_refine_levels_reads_the_photo_and_checks_its_size(tmp_path):
    path = tmp_path / "car_01.jpg"
    Image.fromarray((photo() * 255).astype(np.uint8)).convert("RGB").save(path, quality=100)
    levels = np.rint(blurred_prediction(shift=5) * 255).astype(np.uint8)
    assert refine_levels(levels, path, None) is levels
    refined = refine_levels(levels, path, {"radius": 8, "eps": 1e-3})
    assert refined.dtype == np.uint8 and wrong_columns(refined / 255) <= 1
    with pytest.raises(DataError, match="car_01.jpg: the photo is 200x120, its prediction 100x120"):
        refine_levels(levels[:, :100], path, {"radius": 8, "eps": 1e-3})
