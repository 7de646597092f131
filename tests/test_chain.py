"""The recipe chain (recipe/chain.py): edge refinement, the device kernels, the threshold on
unrounded values, and equivalence with the old per-photo numpy chain (benchmarks/old_chain.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from carvana_seg.ops import kernels
from carvana_seg.data.layout import read_grey
from carvana_seg.ops.metrics import dice_per_image
from carvana_seg.recipe.chain import finish, guided_filter, probability_levels, threshold, thresholded_runs
from carvana_seg.recipe.recipe import Member, Recipe, Refine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import old_chain  # noqa: E402

HEIGHT, WIDTH, EDGE = 120, 200, 100  # the photo's edge: columns >= EDGE are the car


def photo() -> torch.Tensor:
    guide = torch.full((1, HEIGHT, WIDTH), 64, dtype=torch.uint8)
    guide[..., EDGE:] = 191
    return guide


def blurred_prediction(shift: int, size: tuple[int, int] = (HEIGHT, WIDTH)) -> torch.Tensor:
    """A soft map whose 0.5 crossing sits `shift` full-size columns left of the photo's edge."""
    x = (torch.arange(size[1], dtype=torch.float32) + 0.5) * WIDTH / size[1] - 0.5
    return (1 / (1 + torch.exp(-(x - (EDGE - shift)) / 3))).expand(1, *size).clone()


def wrong_columns(probs: torch.Tensor, scale: float = 1.0) -> int:
    truth = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    truth[:, EDGE:] = True
    return int(((probs[0] >= 0.5 * scale) != truth).any(dim=0).sum())


@pytest.mark.parametrize("backend", ["opencv", "torch"])
def test_guided_filter_snaps_the_outline_to_the_photo_edge(backend, monkeypatch):
    monkeypatch.setattr(kernels, "BACKEND", backend)
    assert wrong_columns(blurred_prediction(5)) == 5
    refined = guided_filter(photo(), blurred_prediction(5, (HEIGHT // 2, WIDTH // 2)), Refine(8, 1e-3))
    assert wrong_columns(refined, 255) <= 1  # the filter answers on the 0-255 scale


def test_flat_photo_leaves_a_smooth_map_nearly_unchanged():
    refined = guided_filter(torch.full((1, HEIGHT, WIDTH), 128, dtype=torch.uint8), blurred_prediction(0, (HEIGHT // 2, WIDTH // 2)), Refine(4, 1e-3))
    assert wrong_columns(refined, 255) == 0  # no photo edge to follow: the model's outline stays


@pytest.mark.parametrize("size", [(1280, 1918), (37, 53)])
def test_torch_kernels_match_opencv(size):
    """What runs on a GPU (the torch kernels), checked on CPU tensors against OpenCV."""
    rng = torch.Generator().manual_seed(0)
    small = torch.rand(2, 3, size[0] // 4, size[1] // 4, generator=rng)
    full = torch.rand(2, *size, generator=rng)
    for backend in ("torch", "opencv"):
        assert kernels.resize_bilinear(small, size, backend).shape == (2, 3, *size)
    torch.testing.assert_close(kernels.resize_bilinear(small, size, "torch"), kernels.resize_bilinear(small, size, "opencv"), atol=1e-4, rtol=0)  # float rounding; a level is 1/255 = 0.004
    half = (size[0] // 2, size[1] // 2)
    torch.testing.assert_close(kernels.resize_area(full, half, "torch"), kernels.resize_area(full, half, "opencv"), atol=1e-4, rtol=0)  # float rounding; a level is 1/255 = 0.004
    torch.testing.assert_close(kernels.box_mean(full, 9, "torch"), kernels.box_mean(full, 9, "opencv"), atol=1e-4, rtol=0)  # float rounding; a level is 1/255 = 0.004
    stack = torch.rand(2, 5, *half, generator=rng)  # OpenCV filters planes four at a time: 4 + 1 here
    torch.testing.assert_close(kernels.box_mean(stack, 9, "opencv"), torch.stack([kernels.box_mean(p, 9, "opencv") for p in stack.unbind(1)], 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(kernels.box_mean(stack, 9, "torch"), kernels.box_mean(stack, 9, "opencv"), atol=1e-4, rtol=0)
    photo = (full * 255).to(torch.uint8)
    a, b = torch.rand(2, *size, generator=rng) * 2 - 0.5, torch.rand(2, *size, generator=rng) * 100 - 20
    fitted = kernels.multiply_add(a.clone(), photo, b, "torch")
    torch.testing.assert_close(fitted, kernels.multiply_add(a.clone(), photo, b, "opencv"), atol=1e-4, rtol=1e-6)
    levels = kernels.quantize(fitted.clone(), "torch")
    assert torch.equal(levels, kernels.quantize(fitted.clone(), "opencv"))  # both round half to even and clip
    assert levels.dtype == torch.uint8 and levels.min() == 0 and levels.max() == 255


@pytest.mark.parametrize("backend", ["opencv", "torch"])
def test_threshold_on_values_equals_threshold_on_rounded_levels(backend):
    """The chain thresholds unrounded values; the masks must be those of thresholding the
    rounded levels (what tuning counts), ties at x.5 included (rounded half to even)."""
    rng = torch.Generator().manual_seed(1)
    values = torch.cat([torch.rand(3000, generator=rng) * 300 - 20, torch.arange(-1, 257, 0.5)])  # every half level, and out of range
    levels = kernels.quantize(values.clone(), "torch")
    for level in (0, 1, 2, 127, 128, 129, 254, 255, 256):
        assert torch.equal(kernels.rounds_to_at_least(values, level, backend), levels.int() >= level), level  # int: 256 does not fit a uint8
    recipe = recipe_of([1.0], None, level=129)
    assert torch.equal(threshold(recipe, values[None, None]), probability_levels(recipe, [levels[None, None]], (1, len(values))) >= 129)


def recipe_of(weights: list[float], refine: Refine | None, level: int = 128, steps: tuple[str, ...] = ()) -> Recipe:
    members = tuple(Member(f"m{k}", "runs", w, 1) for k, w in enumerate(weights))
    return Recipe("test", members, "data", threshold_level=level, refine=refine, postprocess=steps)


def soft_maps(truth: np.ndarray, hw: tuple[int, int], seed: int) -> np.ndarray:
    """A plausible model output at training size: the coverage, blurred and noised, as uint8 levels."""
    import cv2

    rng = np.random.default_rng(seed)
    coverage = np.stack([cv2.resize(t.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_AREA) for t in truth])
    coverage = np.stack([cv2.GaussianBlur(c, (5, 5), 1.0) for c in coverage]) + rng.normal(0, 0.03, coverage.shape)
    return np.clip(np.rint(coverage * 255), 0, 255).astype(np.uint8)


def compare_with_old_chain(photos: list[Path], truth: np.ndarray) -> np.ndarray:
    """Per-photo Dice between the old and the new chain's final masks, for a two-member blend
    (members at different training sizes), refined and post-processed."""
    size = truth.shape[1:]
    maps = [soft_maps(truth, (128, 192), 0), soft_maps(truth, (96, 144), 1)]
    recipe = recipe_of([0.7, 0.3], Refine(8, 3e-4), level=120, steps=("largest_component", "fill_holes"))
    guide = torch.from_numpy(np.stack([read_grey(p) for p in photos]))
    new = np.stack([finish(recipe, runs).to_mask() for runs in thresholded_runs(recipe, [torch.from_numpy(m) for m in maps], size, guide)])
    old = np.stack([
        old_chain.old_mask([m[k] for m in maps], recipe.weights, size, photo, {"radius": 8, "eps": 3e-4}, 120, list(recipe.postprocess))
        for k, photo in enumerate(photos)
    ])
    levels_new = probability_levels(recipe.replace(refine=None), [torch.from_numpy(m) for m in maps], size).numpy()
    levels_old = np.stack([old_chain.blend_upsampled([m[k] for m in maps], recipe.weights, size) for k in range(len(photos))])
    assert np.abs(levels_new.astype(int) - levels_old).max() <= 1  # blend + upsample: rounding only
    return dice_per_image(new, old)


def test_new_chain_matches_the_old_on_synthetic_photos(tiny_layout):
    from carvana_seg.data.layout import CarvanaLayout

    layout = CarvanaLayout(tiny_layout)
    ids = layout.train_ids[:4]
    truth = np.stack([layout.read_mask(i) for i in ids])
    dice = compare_with_old_chain([layout.image_path(i) for i in ids], truth)
    assert dice.min() >= 0.999, dice  # 24x36 photos: one pixel is 0.1% of a mask


def test_new_chain_matches_the_old_on_real_photos(real_carvana):
    from carvana_seg.data.layout import CarvanaLayout

    layout = CarvanaLayout(real_carvana)
    ids = layout.train_ids[::96][:8]  # 8 photos of 8 different cars
    truth = np.stack([layout.read_mask(i) for i in ids])
    dice = compare_with_old_chain([layout.image_path(i) for i in ids], truth)
    print("per-photo Dice, new vs old chain:", np.round(dice, 6))
    assert dice.min() >= 0.9999, dice


def test_the_gpu_kernels_give_the_cpu_kernels_masks(tiny_layout, monkeypatch):
    """The whole chain, refined and post-processed, on the torch kernels a GPU runs (here on
    CPU tensors, run boundaries found by torch) against the OpenCV kernels: float rounding
    may flip a pixel whose level sits on the threshold, nothing more."""
    from carvana_seg.data.layout import CarvanaLayout

    layout = CarvanaLayout(tiny_layout)
    ids = layout.train_ids[:4]
    truth = np.stack([layout.read_mask(i) for i in ids])
    maps = [torch.from_numpy(soft_maps(truth, (16, 24), 0))]
    recipe = recipe_of([1.0], Refine(4, 1e-3), level=120, steps=("largest_component", "fill_holes"))
    guide = torch.from_numpy(np.stack([read_grey(layout.image_path(i)) for i in ids]))
    masks = {}
    for backend in ("opencv", "torch"):
        monkeypatch.setattr(kernels, "BACKEND", backend)
        masks[backend] = np.stack([finish(recipe, runs).to_mask() for runs in thresholded_runs(recipe, maps, truth.shape[1:], guide)])
    assert masks["opencv"].any() and not masks["opencv"].all()
    assert (masks["opencv"] != masks["torch"]).sum() <= 2, (masks["opencv"] != masks["torch"]).sum()


@pytest.mark.parametrize("backend", ["opencv", "torch"])
@pytest.mark.parametrize("train_hw", [(16, 24), (24, 36), (40, 60)])
def test_a_folds_score_is_the_chain_of_its_one_model_recipe(tiny_layout, backend, train_hw, monkeypatch):
    """training/trainer.score_fold counts the histograms `oof_histograms` gives for the
    experiment's one-model recipe; they equal those of each OOF map upsampled on its own
    (bilinear, rounded to levels), the path the fold score took before it went through the
    chain: the folds' scores do not move. Smaller, equal and larger than the photos."""
    from carvana_seg.data.layout import CarvanaLayout
    from carvana_seg.ops.metrics import batch_level_histograms
    from carvana_seg.recipe.chain import oof_histograms
    from carvana_seg.store.oof import OOF

    monkeypatch.setattr(kernels, "BACKEND", backend)
    layout = CarvanaLayout(tiny_layout)
    ids = np.array(layout.train_ids)
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, (len(ids), *train_hw), dtype=np.uint8)
    sizes = np.array([read_grey(layout.image_path(str(i))).shape for i in ids])
    oof = OOF(ids, probs, sizes)
    recipe = Recipe.single("e", "runs", 2, str(tiny_layout))
    positive, negative = oof_histograms(recipe, [oof], layout, workers=0)
    for k, image_id in enumerate(ids):
        size = tuple(int(v) for v in sizes[k])
        upsampled = kernels.quantize(kernels.resize_bilinear(torch.from_numpy(probs[k : k + 1]), size))
        truth = torch.from_numpy(np.array(layout.read_mask(str(image_id), size)))[None]
        pos, neg = batch_level_histograms(upsampled, truth)
        assert np.array_equal(positive[k], pos[0].numpy()) and np.array_equal(negative[k], neg[0].numpy())
    assert positive.sum() > 0 and negative.sum() > 0
