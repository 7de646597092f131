"""The one chain from the members' probability maps to submitted masks.

    member maps (training size, uint8 levels)
      -> blend (weighted, on each member's own grid) -> upsample to the photo's size
      -> edge refinement (guided filter on the photo, optional) -> uint8 levels
      -> threshold -> runs (ops/rle.py) -> post-processing (optional) -> RLE

Tuning scores the levels and masks this chain makes on OOF maps; a trained fold's score is
that of its one-model recipe (`Recipe.single`); prediction applies it to the test photos;
the leaderboard and the benchmarks call it too: there is no second copy of any step, the
upsampling of OOF maps to the photos' size included. Everything up to the threshold runs in torch on the maps' device, batched over
same-size photos, with no host round trip; only the boundaries of the thresholded masks'
runs leave the device (a few thousand numbers a photo), for post-processing on the runs
and the RLE writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor, Future

import numpy as np
import torch

from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.ops.kernels import box_mean, multiply_add, quantize, resize_area, resize_bilinear, rounds_to_at_least
from carvana_seg.recipe.postprocess import apply_postprocess
from carvana_seg.recipe.recipe import Recipe, Refine
from carvana_seg.ops.rle import Runs, batch_runs
from carvana_seg.store.oof import OOF, original_size_histograms

SUBSAMPLE = 2  # the guided filter works at half resolution and upsamples its coefficients ("fast guided filter")


def blend(maps: Sequence[torch.Tensor], weights: Sequence[float], size: tuple[int, int]) -> torch.Tensor:
    """Weighted mean of the members' maps (each (B, h_m, w_m) levels) at `size`, 0-255 float.

    Members trained at one size are blended on their own grid and upsampled once: bilinear
    resizing is linear, so this equals upsampling each and blending, at a fraction of the cost.
    """
    total = sum(weights)
    by_size: dict[tuple[int, int], torch.Tensor] = {}
    for levels, weight in zip(maps, weights):
        if weight:
            key = tuple(levels.shape[-2:])
            by_size[key] = by_size.get(key, 0) + (weight / total) * levels.float()
    return sum(resize_bilinear(part, size) for part in by_size.values())


def guided_filter(guide: torch.Tensor, src_small: torch.Tensor, refine: Refine) -> torch.Tensor:
    """Re-fit `src_small` ((B, h, w) probabilities at half size) to the full-size photos
    `guide` ((B, H, W) uint8 grey), window by window: the output, on the 0-255 scale, is
    a * guide + b with a and b the local linear fit of the map on the photo (He, Sun and
    Tang, 2010), smoothed and upsampled ("fast guided filter"). Scaled so the full-size
    work is one multiply-add on the photo as it was decoded."""
    full, small = tuple(guide.shape[-2:]), tuple(src_small.shape[-2:])
    side = 2 * max(1, refine.radius // SUBSAMPLE) + 1
    g = resize_area(guide, small) / 255
    mean_g, mean_s, mean_gs, mean_gg = box_mean(torch.stack([g, src_small, g * src_small, g * g], 1), side).unbind(1)
    a = (mean_gs - mean_g * mean_s) / (mean_gg - mean_g * mean_g + refine.eps)
    b = mean_s - a * mean_g
    mean_a, mean_b = box_mean(torch.stack([a, b], 1), side).unbind(1)
    # 255 * (a * guide / 255 + b) = a * guide + 255 * b
    return multiply_add(resize_bilinear(mean_a, full), guide, resize_bilinear(mean_b * 255, full))


def half_size(size: tuple[int, int]) -> tuple[int, int]:
    return max(1, size[0] // SUBSAMPLE), max(1, size[1] // SUBSAMPLE)


def probability_values(recipe: Recipe, maps: Sequence[torch.Tensor], size: tuple[int, int], guide: torch.Tensor | None = None) -> torch.Tensor:
    """The blended (and refined) probability of every pixel of a batch of photos of one
    `size` (H, W), as (B, H, W) float on the 0-255 scale, before rounding to levels, on the
    maps' device. `guide`: the photos as (B, H, W) uint8 grey, needed only when the recipe refines edges."""
    if recipe.refine is None:
        return blend(maps, recipe.weights, size)
    if guide is None or tuple(guide.shape[-2:]) != tuple(size):
        raise ValueError(f"edge refinement needs the grey photos at {size[1]}x{size[0]}")
    src_small = blend(maps, recipe.weights, half_size(size)).div_(255)  # = the full-size blend averaged 2x2, up to rounding
    return guided_filter(guide, src_small, recipe.refine)


def probability_levels(recipe: Recipe, maps: Sequence[torch.Tensor], size: tuple[int, int], guide: torch.Tensor | None = None) -> torch.Tensor:
    """`probability_values` rounded to (B, H, W) uint8 levels: what tuning's histograms count."""
    return quantize(probability_values(recipe, maps, size, guide))


def oof_histograms(
    recipe: Recipe, oofs: Sequence[OOF], layout: CarvanaLayout, device: torch.device | None = None, workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (positive, negative) level histograms, (N, 256) each, at original size of the
    recipe's levels (`probability_levels`, before its threshold) on OOF maps: `oofs` holds
    each member's, over the same images in the same order. What tuning selects on, and what
    a trained fold's score counts (its one-model recipe)."""
    device = device or torch.device("cpu")

    def levels(indices: np.ndarray, size: tuple[int, int], guide: torch.Tensor | None) -> torch.Tensor:
        maps = [torch.from_numpy(oof.probs[indices]).to(device, non_blocking=True) for oof in oofs]
        return probability_levels(recipe, maps, size, guide)

    return original_size_histograms(oofs[0], layout, levels, with_guides=recipe.refine is not None, device=device, workers=workers)


def threshold(recipe: Recipe, values: torch.Tensor) -> torch.Tensor:
    """Bool masks of the pixels whose level (the value rounded) reaches the recipe's threshold
    level: the same masks as thresholding `probability_levels`, without rounding every pixel."""
    return rounds_to_at_least(values, recipe.threshold_level)


def thresholded_runs(recipe: Recipe, maps: Sequence[torch.Tensor], size: tuple[int, int], guide: torch.Tensor | None = None) -> list[Runs]:
    """The runs of the recipe's masks of a batch of same-size photos, before post-processing
    (on the host: only the run boundaries leave the device)."""
    return batch_runs(threshold(recipe, probability_values(recipe, maps, size, guide)))


def finish(recipe: Recipe, runs: Runs) -> Runs:
    """One photo's thresholded runs after the recipe's post-processing."""
    return apply_postprocess(runs, recipe.postprocess)


def encode_batch(recipe: Recipe, runs: Sequence[Runs]) -> list[str]:
    """Post-process and RLE-encode a batch's runs."""
    return [finish(recipe, r).to_rle() for r in runs]


def apply_recipe(recipe: Recipe, maps: Sequence[torch.Tensor], size: tuple[int, int], guide: torch.Tensor | None, pool: Executor) -> list[tuple[Future, int]]:
    """The whole chain for a batch of same-size photos, started now; for each photo, the
    future whose result (a list of RLE strings) holds its RLE, and its place in that list.

    On a GPU the device part is queued now, from this thread, for the whole batch (one sync,
    when the run boundaries come back), and only post-processing and encoding go to `pool`.
    On the CPU each photo's whole chain goes to `pool`: its OpenCV kernels and numpy release
    the GIL, so photos run on both cores beside the next batch's networks, and one photo's
    maps (at most 10 MB each) stay small enough for malloc to reuse (ops/host_memory.py)."""
    if maps[0].device.type != "cpu":
        batch = pool.submit(encode_batch, recipe, thresholded_runs(recipe, maps, size, guide))
        return [(batch, k) for k in range(len(maps[0]))]

    def one_photo(k: int) -> list[str]:
        return encode_batch(recipe, thresholded_runs(recipe, [m[k : k + 1] for m in maps], size, None if guide is None else guide[k : k + 1]))

    return [(pool.submit(one_photo, k), 0) for k in range(len(maps[0]))]
