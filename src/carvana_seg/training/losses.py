"""Segmentation losses by name, from segmentation-models-pytorch (binary mode, logits in)."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

from carvana_seg.config import ConfigError


class BCEDiceLoss(nn.Module):
    """BCE for per-pixel calibration plus soft Dice for the metric being scored."""

    def __init__(self) -> None:
        super().__init__()
        self.bce = smp.losses.SoftBCEWithLogitsLoss()
        self.dice = smp.losses.DiceLoss(smp.losses.BINARY_MODE, from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, target) + self.dice(logits, target)


LOSSES = {
    "bce_dice": BCEDiceLoss,
    "bce": smp.losses.SoftBCEWithLogitsLoss,
    "lovasz": lambda: smp.losses.LovaszLoss(smp.losses.BINARY_MODE, per_image=True),
    "focal": lambda: smp.losses.FocalLoss(smp.losses.BINARY_MODE),
}


def build_loss(name: str) -> nn.Module:
    if name not in LOSSES:
        raise ConfigError(f"train.loss: unknown loss {name!r}; available: {', '.join(LOSSES)}")
    return LOSSES[name]()
