"""The three image kernels of the prediction chain, on whichever device the maps live.

The chain (recipe/chain.py) is written once in torch; only these kernels differ by device.
On CUDA they are torch ops (batched, no host round trip). On the CPU, OpenCV's SIMD
resize and box filter are 5-25x faster than torch's CPU kernels on 1918x1280 maps
(benchmarks/results/predict.md), so the CPU runs them through OpenCV on the tensors'
own memory. Both give the same numbers to float rounding (tests/test_chain.py checks
the torch kernels on CPU tensors against OpenCV).
"""

from __future__ import annotations

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


def _per_plane(x: torch.Tensor, op) -> torch.Tensor:
    """Apply a 2-D OpenCV op to every (H, W) plane of a (..., H, W) float32 CPU tensor."""
    planes = x.detach().float().contiguous().numpy().reshape(-1, *x.shape[-2:])
    out = np.stack([op(plane) for plane in planes])
    return torch.from_numpy(out).reshape(*x.shape[:-2], *out.shape[-2:])


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], backend: str | None = None) -> torch.Tensor:
    """(..., h, w) float -> (..., H, W), bilinear with half-pixel centres (cv2 INTER_LINEAR)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x.float()
    if _use_opencv(x, backend):
        return _per_plane(x, lambda p: cv2.resize(p, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))
    flat = x.float().reshape(-1, 1, *x.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*x.shape[:-2], *size)


def resize_area(x: torch.Tensor, size: tuple[int, int], backend: str | None = None) -> torch.Tensor:
    """(..., H, W) float -> (..., h, w) by area averaging (cv2 INTER_AREA; exact for integer factors)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x.float()
    if _use_opencv(x, backend):
        return _per_plane(x, lambda p: cv2.resize(p, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    (height, width), flat = x.shape[-2:], x.float().reshape(-1, *x.shape[-2:])
    if height % size[0] == 0 and width % size[1] == 0:  # whole factors: plain block means
        out = F.avg_pool2d(flat[:, None], (height // size[0], width // size[1]))[:, 0]
    else:  # fractional factors: each output pixel averages the input area it covers, partial pixels weighted
        out = _area_weights(size[0], height, x.device) @ flat @ _area_weights(size[1], width, x.device).T
    return out.reshape(*x.shape[:-2], *size)


def _area_weights(n_out: int, n_in: int, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) matrix of the share of each input pixel in each output pixel (rows sum to 1)."""
    edges = torch.arange(n_out + 1, dtype=torch.float64) * (n_in / n_out)
    pixel = torch.arange(n_in, dtype=torch.float64)
    overlap = (torch.minimum(edges[1:, None], pixel + 1) - torch.maximum(edges[:-1, None], pixel)).clamp(min=0)
    return (overlap / (n_in / n_out)).float().to(device)


def box_mean(x: torch.Tensor, side: int, backend: str | None = None) -> torch.Tensor:
    """Mean over a side x side window around each pixel, borders mirrored without repeating
    the edge pixel (cv2.boxFilter's default BORDER_REFLECT_101, torch's 'reflect')."""
    if _use_opencv(x, backend):
        return _per_plane(x, lambda p: cv2.boxFilter(p, -1, (side, side)))
    half = side // 2
    mode = "reflect" if half < min(x.shape[-2:]) else "replicate"  # reflect needs a margin narrower than the map
    flat = F.pad(x.float().reshape(-1, 1, *x.shape[-2:]), (half, half, half, half), mode=mode)
    flat = F.avg_pool2d(F.avg_pool2d(flat, (side, 1), stride=1), (1, side), stride=1)
    return flat.reshape(x.shape)
