"""Masks as runs (ops/rle.py) and the post-processing on them: exactly what OpenCV's
8-connected components and the pixel RLE writer give on the full masks."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from carvana_seg.ops import kernels
from carvana_seg.ops.metrics import dice_per_image
from carvana_seg.recipe.postprocess import fill_holes, largest_component, min_area
from carvana_seg.ops.rle import Runs, batch_runs, dice, row_sums
from carvana_seg.ops.rle import rle_encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import old_chain  # noqa: E402  (the cv2-on-pixels post-processing the runs replace)


def random_masks() -> list[np.ndarray]:
    """Blobs, specks, holes, stripes, single rows and columns, empty and full masks."""
    rng = np.random.default_rng(0)
    masks = [np.zeros((5, 7), np.uint8), np.ones((5, 7), np.uint8), np.ones((1, 9), np.uint8), np.zeros((6, 1), np.uint8)]
    for shape in [(1, 40), (40, 1), (7, 9), (31, 47), (64, 96), (120, 200)]:
        for density in (0.05, 0.3, 0.5, 0.7, 0.95):
            noise = rng.random(shape) < density
            masks.append(noise.astype(np.uint8))
            if min(shape) > 4:  # smooth blobs with holes and specks, like a thresholded car
                field = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), max(1.0, min(shape) / 10))
                masks.append(((field > np.quantile(field, 1 - density)) ^ (rng.random(shape) < 0.02)).astype(np.uint8))
    stripes = np.zeros((20, 30), np.uint8)
    stripes[:, ::2] = 1  # every column a component of its own: touching only across rows
    masks.append(stripes)
    diagonal = np.eye(12, dtype=np.uint8)  # one component through diagonal contacts only
    masks.append(diagonal)
    return masks


@pytest.mark.parametrize("step", ["largest_component", "fill_holes", "min_area"])
def test_postprocessing_on_runs_equals_opencv_on_pixels(step):
    ours = {"largest_component": largest_component, "fill_holes": fill_holes, "min_area": min_area}[step]
    for k, mask in enumerate(random_masks()):
        expected = old_chain.POSTPROCESS[step](mask)
        assert np.array_equal(ours(Runs.from_mask(mask)).to_mask(), expected), (step, k, mask.shape)


def test_components_are_opencvs_numbered_in_raster_order():
    """The same components as OpenCV's, pixel for pixel; numbered by each one's first pixel
    in raster order (OpenCV's own numbering follows its 2x2 block scan)."""
    for k, mask in enumerate(random_masks()):
        count, cv_labels = cv2.connectedComponents(mask, connectivity=8)
        runs = Runs.from_mask(mask)
        ours, labels = runs.components()
        assert ours == count - 1, k
        first_pixel = {int(np.flatnonzero(cv_labels.reshape(-1) == label)[0]): label for label in range(1, count)}
        for label, (_, cv_label) in enumerate(sorted(first_pixel.items())):
            assert np.array_equal(runs.subset(labels == label).to_mask(), (cv_labels == cv_label).astype(np.uint8)), (k, label)


def test_largest_component_tie_keeps_the_first_in_raster_order():
    """The rule on an exact tie (OpenCV's own label order follows its 2x2 block scan)."""
    mask = np.zeros((10, 10), np.uint8)
    mask[6:8, 1:3] = 1  # 4 pixels, further left but lower
    mask[1:3, 6:8] = 1  # 4 pixels whose first pixel (row 1) comes first in raster order: kept
    kept = largest_component(Runs.from_mask(mask)).to_mask()
    assert kept[1, 6] == 1 and kept[6, 1] == 0
    assert np.array_equal(kept, old_chain.largest_component(mask))


def test_runs_round_trip_complement_rle_and_dice():
    rng = np.random.default_rng(1)
    for k, mask in enumerate(random_masks()):
        runs = Runs.from_mask(mask)
        assert np.array_equal(runs.to_mask(), mask), k
        assert np.array_equal(runs.complement().to_mask(), 1 - mask), k
        assert runs.to_rle() == rle_encode(mask), k  # runs that wrap a row end join, as in the flattened RLE
        truth = (rng.random(mask.shape) < 0.4).astype(np.uint8)
        assert dice(runs, row_sums(truth)) == pytest.approx(dice_per_image(mask[None], truth[None])[0], abs=1e-12), k
    assert len(Runs.from_mask(np.zeros((4, 4), np.uint8))) == 0 and Runs.from_mask(np.zeros((4, 4), np.uint8)).to_rle() == ""


def test_batch_runs_on_the_device_path_equal_the_host_path(monkeypatch):
    """What a GPU runs (torch: pad, diff, nonzero over the whole batch), checked on CPU tensors."""
    masks = torch.from_numpy(np.stack([m for m in random_masks() if m.shape == (64, 96)]) != 0)
    host = batch_runs(masks)
    monkeypatch.setattr(kernels, "BACKEND", "torch")
    device = batch_runs(masks)
    assert len(host) == len(device) == len(masks)
    for a, b, mask in zip(host, device, masks.numpy()):
        for field in ("rows", "starts", "ends"):
            assert np.array_equal(getattr(a, field), getattr(b, field))
        assert np.array_equal(a.to_mask(), mask.astype(np.uint8))


def test_real_mask_post_processing(real_carvana):
    """On real Carvana masks with specks and holes punched in: runs and OpenCV agree."""
    from carvana_seg.data.layout import CarvanaLayout

    layout = CarvanaLayout(real_carvana)
    rng = np.random.default_rng(2)
    for image_id in layout.train_ids[::200]:
        mask = layout.read_mask(image_id).astype(np.uint8)
        for _ in range(40):
            y, x = rng.integers(0, mask.shape[0] - 9), rng.integers(0, mask.shape[1] - 9)
            mask[y : y + rng.integers(1, 9), x : x + rng.integers(1, 9)] ^= 1
        runs = Runs.from_mask(mask)
        assert runs.to_rle() == rle_encode(mask)
        for step in ("largest_component", "fill_holes", "min_area"):
            assert np.array_equal({"largest_component": largest_component, "fill_holes": fill_holes, "min_area": min_area}[step](runs).to_mask(), old_chain.POSTPROCESS[step](mask)), (image_id, step)
