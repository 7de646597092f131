"""Test-time augmentation: predict on transformed copies, undo the transform, average
the probabilities (after the sigmoid, so each view counts as a calibrated vote).

A TTA spec is a comma list of views besides the identity: `none`, `hflip`, and scales
such as `scale0.75`. `hflip,scale1.25` predicts the identity, the mirror and a 1.25x upscale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from carvana_seg.ops.kernels import quantize


def _predict_view(model: torch.nn.Module, images: torch.Tensor, view: str) -> torch.Tensor:
    if view == "identity":
        return torch.sigmoid(model(images).float())
    if view == "hflip":
        return torch.sigmoid(model(images.flip(-1)).float()).flip(-1)
    factor = float(view.removeprefix("scale"))  # a `scale<factor>` view, checked by recipe/tta.parse_tta
    size = images.shape[-2:]
    scaled = F.interpolate(images, scale_factor=factor, mode="bilinear", align_corners=False)
    probs = torch.sigmoid(model(scaled).float())
    return F.interpolate(probs, size=size, mode="bilinear", align_corners=False)


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: torch.Tensor, views: list[str], precision: str = "no") -> torch.Tensor:
    """Mean foreground probability over the views: (B, H, W) float in [0, 1].

    On a GPU the network runs in the precision it was trained in (`train.precision`), as the
    training loop's own validation did, so OOF, TTA OOF and test maps come from one model."""
    images = images.contiguous(memory_format=torch.channels_last)
    dtype = AUTOCAST.get(precision) if images.device.type == "cuda" else None
    with torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        total = sum(_predict_view(model, images, view)[:, 0] for view in views)
    return total / len(views)


def to_levels(probs: torch.Tensor) -> torch.Tensor:
    """Probabilities -> uint8 levels round(p * 255), the form OOF and blends are stored in."""
    return quantize(probs * 255)
