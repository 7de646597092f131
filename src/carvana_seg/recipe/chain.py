"""The one chain from the members' probability maps to submitted masks.

    member maps (training size, uint8 levels)
      -> blend (weighted, on each member's own grid) -> upsample to the photo's size
      -> edge refinement (guided filter on the photo, optional) -> uint8 levels
      -> threshold -> post-processing (optional) -> RLE

Tuning scores the levels and masks this chain makes on OOF maps; prediction applies it to
the test photos; the leaderboard and the benchmarks call it too: there is no second copy
of any step. Everything up to the threshold runs in torch on the maps' device, batched over
same-size photos, with no host round trip; only the thresholded masks leave the device,
bit-packed (1/32 of a float map), for OpenCV's connected components and the RLE writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor, Future

import numpy as np
import torch

from carvana_seg.core.kernels import at_least, box_mean, multiply_add, quantize, resize_area, resize_bilinear
from carvana_seg.recipe.postprocess import apply_postprocess
from carvana_seg.recipe.recipe import Recipe, Refine
from carvana_seg.rle import rle_encode

SUBSAMPLE = 2  # the guided filter works at half resolution and upsamples its coefficients ("fast guided filter")
BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)  # np.packbits' bit order


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
    mean_g, mean_s = box_mean(g, side), box_mean(src_small, side)
    a = (box_mean(g * src_small, side) - mean_g * mean_s) / (box_mean(g * g, side) - mean_g * mean_g + refine.eps)
    b = mean_s - a * mean_g
    # 255 * (a * guide / 255 + b) = a * guide + 255 * b
    a_full = resize_bilinear(box_mean(a, side), full)
    b_full = resize_bilinear(box_mean(b, side).mul_(255), full)
    return multiply_add(a_full, guide, b_full)


def half_size(size: tuple[int, int]) -> tuple[int, int]:
    return max(1, size[0] // SUBSAMPLE), max(1, size[1] // SUBSAMPLE)


def probability_levels(recipe: Recipe, maps: Sequence[torch.Tensor], size: tuple[int, int], guide: torch.Tensor | None = None) -> torch.Tensor:
    """The blended (and refined) probability of every pixel of a batch of photos of one
    `size` (H, W), as (B, H, W) uint8 levels on the maps' device. `guide`: the photos as
    (B, H, W) uint8 grey, needed only when the recipe refines edges."""
    if recipe.refine is None:
        return quantize(blend(maps, recipe.weights, size))
    if guide is None or tuple(guide.shape[-2:]) != tuple(size):
        raise ValueError(f"edge refinement needs the grey photos at {size[1]}x{size[0]}")
    src_small = blend(maps, recipe.weights, half_size(size)).div_(255)  # = the full-size blend averaged 2x2, up to rounding
    return quantize(guided_filter(guide, src_small, recipe.refine))


def threshold(recipe: Recipe, levels: torch.Tensor) -> torch.Tensor:
    return at_least(levels, recipe.threshold_level)


def pack_bits(masks: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool -> (B, ceil(H * W / 8)) uint8 on the same device, in np.packbits' order."""
    flat = masks.reshape(len(masks), -1).to(torch.uint8)
    pad = (-flat.shape[1]) % 8
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    weights = torch.tensor(BIT_WEIGHTS, dtype=torch.uint8, device=masks.device)
    return (flat.reshape(len(masks), -1, 8) * weights).sum(-1, dtype=torch.uint8)


def masks_to_host(masks: torch.Tensor) -> np.ndarray:
    """(B, H, W) bool masks -> uint8 0/1 numpy; from a GPU they travel bit-packed (1 bit a pixel)."""
    if masks.device.type == "cpu":
        return masks.numpy().view(np.uint8)
    batch, height, width = masks.shape
    return np.unpackbits(pack_bits(masks).cpu().numpy(), axis=1, count=height * width).reshape(batch, height, width)


def finish_mask(recipe: Recipe, mask: np.ndarray) -> np.ndarray:
    """One thresholded (H, W) uint8 mask after the recipe's post-processing."""
    return apply_postprocess(mask, list(recipe.postprocess))


def encode(recipe: Recipe, mask: np.ndarray) -> str:
    """Post-process one thresholded mask and RLE-encode it (OpenCV releases the GIL: run in threads)."""
    return rle_encode(finish_mask(recipe, mask))


def thresholded_masks(recipe: Recipe, maps: Sequence[torch.Tensor], size: tuple[int, int], guide: torch.Tensor | None = None) -> np.ndarray:
    """The recipe's masks of a batch of same-size photos before post-processing: (B, H, W) uint8 0/1 on the host."""
    return masks_to_host(threshold(recipe, probability_levels(recipe, maps, size, guide)))


def encode_batch(recipe: Recipe, masks: np.ndarray) -> list[str]:
    return [encode(recipe, mask) for mask in masks]


def apply_recipe(recipe: Recipe, maps: Sequence[torch.Tensor], size: tuple[int, int], guide: torch.Tensor | None, pool: Executor) -> Future:
    """The whole chain for a batch of same-size photos; the future gives their RLE strings.

    On a GPU the device part is queued now, from this thread, and only post-processing and
    encoding go to `pool`. On the CPU the whole chain goes to `pool`: its OpenCV kernels and
    torch ops release the GIL, so it runs on the other core beside the next batch's networks."""
    if maps[0].device.type != "cpu":
        return pool.submit(encode_batch, recipe, thresholded_masks(recipe, maps, size, guide))
    return pool.submit(lambda: encode_batch(recipe, thresholded_masks(recipe, maps, size, guide)))
