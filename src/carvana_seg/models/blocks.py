"""The building blocks of the custom U-Net: one block class, four kinds.

A kind is a pair of switches on the classic double convolution, so `se`, `res` and
`res_se` are options of one block, not copies of it:

- `plain`: (3x3 conv, BatchNorm, ReLU) x 2. The convolutions keep their bias, as in the
  reference design whose parameter count (31,042,369) the tests pin.
- `se`: the plain block followed by Squeeze-and-Excitation (Hu et al.): bias-free
  Linear layers, as in the reference SE design (13,413,761 parameters).
- `res`: the plain block plus a 1x1 convolution (with bias) of the block's input added to
  its output, the ResUNet shortcut (31,742,017 parameters with it on the encoder only).
- `res_se`: both; SE re-weights the block's output before the shortcut is added, as in
  SE-ResNet.
"""

from __future__ import annotations

import torch
from torch import nn

# kind -> (squeeze-and-excitation, residual shortcut)
BLOCK_KINDS: dict[str, tuple[bool, bool]] = {
    "plain": (False, False),
    "se": (True, False),
    "res": (False, True),
    "res_se": (True, True),
}


class SqueezeExcite(nn.Module):
    """Channel re-weighting from global context: pool, Linear c->c/r, ReLU, Linear c/r->c, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)  # narrow U-Nets (base 16) would otherwise get 0
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(self.pool(x).flatten(1))
        return x * weights[:, :, None, None]


def double_conv(in_channels: int, out_channels: int, mid_channels: int) -> nn.Sequential:
    """The classic U-Net block: (3x3 conv, BatchNorm, ReLU) x 2."""
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(mid_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNetBlock(nn.Module):
    """A double convolution, optionally followed by SE and/or summed with a 1x1 shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        mid_channels: int | None = None,
        squeeze_excite: bool = False,
        residual: bool = False,
        se_reduction: int = 16,
    ) -> None:
        super().__init__()
        self.body = double_conv(in_channels, out_channels, mid_channels or out_channels)
        self.se = SqueezeExcite(out_channels, se_reduction) if squeeze_excite else nn.Identity()
        # Always a 1x1 projection, even where widths match (the bottleneck of a halved design),
        # so one switch means one design and parameter counts follow from the widths alone.
        self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.body(x))
        return out if self.shortcut is None else out + self.shortcut(x)


def check_block_kind(kind: str) -> tuple[bool, bool]:
    """Return (squeeze_excite, residual) for a block kind; unknown kinds list the valid ones."""
    if kind not in BLOCK_KINDS:
        raise ValueError(f"unknown model.block {kind!r}; available: {', '.join(BLOCK_KINDS)}")
    return BLOCK_KINDS[kind]
