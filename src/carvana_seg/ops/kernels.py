"""The full-resolution kernels of the prediction chain, on whichever device the maps live.

The chain (recipe/chain.py) is written once, in torch; only these primitives differ by
device. On CUDA they are torch ops (batched, no host round trip). On the CPU, OpenCV's SIMD
kernels (a box filter, a threshold, a multiply-add with rounding) are several times faster
than torch's on full-size maps, so CPU tensors go through OpenCV on their own memory. Both
give the same numbers up to float rounding: tests/test_chain.py checks the torch kernels on
CPU tensors against OpenCV, which is how the GPU path is tested without a GPU.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

BACKENDS = ("auto", "torch", "opencv")
BACKEND = "auto"  # auto: OpenCV for CPU tensors, torch elsewhere; tests set "torch" to check the GPU path on CPU


def _use_opencv(x: torch.Tensor, backend: str | None) -> bool:
    backend = backend or BACKEND
    if backend not in BACKENDS:
        raise ValueError(f"kernel backend {backend!r}: use one of {', '.join(BACKENDS)}")
    return backend == "opencv" or (backend == "auto" and x.device.type == "cpu")


def _per_plane(x: torch.Tensor, out_hw: tuple[int, int], op) -> torch.Tensor:
    """Apply a 2-D OpenCV op `op(src, dst)` to every (H, W) plane of a (..., H, W) CPU tensor,
    writing float32 results straight into one preallocated output (no stacking copies)."""
    planes = x.detach().contiguous().numpy().reshape(-1, *x.shape[-2:])
    if planes.dtype != np.float32:
        planes = planes.astype(np.float32)
    out = np.empty((len(planes), *out_hw), dtype=np.float32)
    for plane, dst in zip(planes, out):
        op(plane, dst)
    return torch.from_numpy(out).reshape(*x.shape[:-2], *out_hw)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], backend: str | None = None) -> torch.Tensor:
    """(..., h, w) float -> (..., H, W), bilinear with half-pixel centres (cv2 INTER_LINEAR)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x.float()
    if _use_opencv(x, backend):
        return _per_plane(x, size, lambda src, dst: cv2.resize(src, (size[1], size[0]), dst=dst, interpolation=cv2.INTER_LINEAR))
    flat = x.float().reshape(-1, 1, *x.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*x.shape[:-2], *size)


def resize_area(x: torch.Tensor, size: tuple[int, int], backend: str | None = None) -> torch.Tensor:
    """(..., H, W) float -> (..., h, w) by area averaging (cv2 INTER_AREA; exact for integer factors)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x.float()
    if _use_opencv(x, backend):
        return _per_plane(x, size, lambda src, dst: cv2.resize(src, (size[1], size[0]), dst=dst, interpolation=cv2.INTER_AREA))
    (height, width), flat = x.shape[-2:], x.float().reshape(-1, *x.shape[-2:])
    if height % size[0] == 0 and width % size[1] == 0:  # whole factors: plain block means
        out = F.avg_pool2d(flat[:, None], (height // size[0], width // size[1]))[:, 0]
    else:  # fractional factors: each output pixel averages the input area it covers, partial pixels weighted
        out = _area_weights(size[0], height, x.device) @ flat @ _area_weights(size[1], width, x.device).T
    return out.reshape(*x.shape[:-2], *size)


@functools.lru_cache(maxsize=16)
def _area_weights(n_out: int, n_in: int, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) matrix of the share of each input pixel in each output pixel (rows sum to 1)."""
    edges = torch.arange(n_out + 1, dtype=torch.float64) * (n_in / n_out)
    pixel = torch.arange(n_in, dtype=torch.float64)
    overlap = (torch.minimum(edges[1:, None], pixel + 1) - torch.maximum(edges[:-1, None], pixel)).clamp(min=0)
    return (overlap / (n_in / n_out)).float().to(device)


def box_mean(x: torch.Tensor, side: int, backend: str | None = None) -> torch.Tensor:
    """Mean over a side x side window around each pixel of every (H, W) plane of `x`, borders
    mirrored without repeating the edge pixel (cv2.boxFilter's default BORDER_REFLECT_101,
    torch's 'reflect'). Stack the planes to filter (e.g. (B, 4, H, W)) into one call: OpenCV
    filters four interleaved planes in about the time of one."""
    if _use_opencv(x, backend):
        planes = x.detach().float().contiguous().numpy().reshape(-1, *x.shape[-2:])
        out = np.empty_like(planes)
        for group in range(0, len(planes), 4):
            chunk = planes[group : group + 4]
            filtered = cv2.boxFilter(cv2.merge(list(chunk)), -1, (side, side))
            out[group : group + 4] = filtered.transpose(2, 0, 1) if filtered.ndim == 3 else filtered
        return torch.from_numpy(out).reshape(x.shape)
    half = side // 2
    mode = "reflect" if half < min(x.shape[-2:]) else "replicate"  # reflect needs a margin narrower than the map
    flat = F.pad(x.float().reshape(-1, 1, *x.shape[-2:]), (half, half, half, half), mode=mode)
    flat = F.avg_pool2d(F.avg_pool2d(flat, (side, 1), stride=1), (1, side), stride=1)
    return flat.reshape(x.shape)


def quantize(values: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Float maps on the 0-255 scale -> uint8 levels, rounded half to even and clipped.
    Works in place on `values` (float32)."""
    if _use_opencv(values, backend):
        flat = values.detach().float().contiguous().numpy().reshape(-1, values.shape[-1])
        np.maximum(flat, 0, out=flat)  # convertScaleAbs would mirror negatives
        return torch.from_numpy(cv2.convertScaleAbs(flat)).reshape(values.shape)
    return values.round_().clamp_(0, 255).to(torch.uint8)


def multiply_add(a: torch.Tensor, photo: torch.Tensor, b: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """a * photo + b, float32; `photo` uint8 of the same shape. Works in place on `a`."""
    if _use_opencv(a, backend):
        flat_a = a.detach().contiguous().numpy().reshape(-1, a.shape[-1])
        flat_p = photo.contiguous().numpy().reshape(-1, a.shape[-1])
        cv2.multiply(flat_a, flat_p, dst=flat_a, dtype=cv2.CV_32F)
        cv2.add(flat_a, b.contiguous().numpy().reshape(-1, a.shape[-1]), dst=flat_a)
        return torch.from_numpy(flat_a).reshape(a.shape)
    return a.mul_(photo).add_(b)


def rounds_to_at_least(values: torch.Tensor, level: int, backend: str | None = None) -> torch.Tensor:
    """Bool mask of the pixels whose level `quantize(values)` would be >= `level`, without
    rounding: rint(x) >= L exactly when x > L - 0.5, or x == L - 0.5 for an even L (half to even)."""
    if level <= 0 or level > 255:  # every level reaches 0; none reaches past 255
        return torch.full(values.shape, level <= 0, dtype=torch.bool, device=values.device)
    edge = level - 0.5  # exact in float32
    if _use_opencv(values, backend):
        compare = np.greater_equal if level % 2 == 0 else np.greater
        return torch.from_numpy(compare(values.detach().contiguous().numpy(), np.float32(edge)))
    return values >= edge if level % 2 == 0 else values > edge


def run_bounds(masks: torch.Tensor, backend: str | None = None) -> np.ndarray:
    """Where the runs of a (B, H, W) bool batch start and end, as int64 positions in the batch
    flattened with one blank column after every row: start, end, start, end, ... (ends
    exclusive). The blank column ends every run within its row. On a GPU the positions are
    found there and only they are copied to the host (one sync per batch)."""
    batch, height, width = masks.shape
    if _use_opencv(masks, backend):
        padded = np.zeros((batch, height, width + 1), np.uint8)
        padded[..., :width] = masks.numpy()
        flat = padded.reshape(-1)
        changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        return np.concatenate([[0], changes]) if flat[0] else changes
    flat = F.pad(masks.to(torch.uint8), (0, 1)).reshape(-1)
    changes = torch.nonzero(torch.diff(flat, prepend=flat.new_zeros(1))).reshape(-1)
    return changes.cpu().numpy()
