"""One U-Net skeleton with a pluggable block (see blocks.py for the kinds).

Widths: encoder stage i has `base_channels * 2**i` channels (i = 0..depth). With
`bottleneck_factor` f, the deepest stage and every decoder stage but the last are divided
by f: the reference SE design is f=2 (bottleneck 512, decoder 256, 128, 64, then 64).
`upsample=bilinear` is parameter-free, so, as in the classic bilinear U-Net, it halves the
channels coming up by doubling the factor (f=1 with bilinear gives bottleneck 512 and
decoder blocks of 1024->256, 512->128, 256->64, 128->64 with middle width in/2).
`upsample=transpose` uses a 2x2 stride-2 transposed convolution straight to the stage's
output width, then the block maps (that + skip) to the same width.

Residual shortcuts go on the encoder blocks (the ResUNet design and the 31,742,017
reference count); `decoder_residual=True` adds them to the decoder blocks too.

Any input size works: pooling uses ceil mode, so every stage keeps at least one pixel and
each upsampled map is at least as large as its skip; it is cropped at the bottom/right to
the skip's size (the extra row/column comes from the padded pooling window there). The
output therefore has exactly the input's height and width.

`pixel_shuffle=f` wraps the same U-Net in a space-to-depth pair: each f x f block of input
pixels becomes one cell of f*f*in_channels (PixelUnshuffle), and the head predicts f*f
values per cell that PixelShuffle lays back out as the f x f block. The U-Net's stages then
run at 1/f of the input size, at about the compute of a U-Net fed a 1/f-size image, but it
sees the photo's edges and places the outline on a grid f times finer. An input whose sides
are not multiples of f is padded at the bottom/right (edge pixels repeated) and the output
cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carvana_seg.config import UPSAMPLE_CHOICES, UNetConfig
from carvana_seg.models.blocks import UNetBlock, check_block_kind
from carvana_seg.models.registry import register_model

UPSAMPLE_MODES = UPSAMPLE_CHOICES  # one list, in config.py


class UpStage(nn.Module):
    """Upsample x2, crop to the skip's size, concatenate the skip, apply the block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsample: str, **block_kwargs) -> None:
        super().__init__()
        if upsample == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
            cat_channels = out_channels + skip_channels
            mid_channels = out_channels
        else:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            cat_channels = in_channels + skip_channels
            mid_channels = cat_channels // 2
        self.block = UNetBlock(cat_channels, out_channels, mid_channels=mid_channels, **block_kwargs)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        height, width = skip.shape[-2:]
        x = self.up(x)[..., :height, :width]
        return self.block(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """Encoder of `depth` max-pool stages, decoder with skip concatenation, 1x1 head."""

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 1,
        *,
        block: str = "plain",
        base_channels: int = 64,
        depth: int = 4,
        upsample: str = "transpose",
        bottleneck_factor: int = 1,
        se_reduction: int = 16,
        dropout: float = 0.0,
        decoder_residual: bool = False,
        pixel_shuffle: int = 1,
    ) -> None:
        super().__init__()
        squeeze_excite, residual = check_block_kind(block)
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"unknown model.upsample {upsample!r}; available: {', '.join(UPSAMPLE_MODES)}")
        if depth < 1 or base_channels < 1 or bottleneck_factor < 1 or pixel_shuffle < 1:
            raise ValueError("model.depth, model.base_channels, model.bottleneck_factor and model.pixel_shuffle must be >= 1")
        factor = bottleneck_factor * (2 if upsample == "bilinear" else 1)
        widths = [base_channels * 2**i for i in range(depth + 1)]
        if widths[1] % factor:
            raise ValueError(f"model.base_channels*2={widths[1]} is not divisible by the width factor {factor}")
        # Encoder widths, then decoder output widths from the deepest stage up.
        encoder_widths = widths[:-1] + [widths[-1] // factor]
        decoder_widths = [widths[i] // factor for i in range(depth - 1, 0, -1)] + [widths[0]]

        encoder_kwargs = dict(squeeze_excite=squeeze_excite, residual=residual, se_reduction=se_reduction)
        decoder_kwargs = dict(encoder_kwargs, residual=residual and decoder_residual)
        self.cell_size = pixel_shuffle
        self.encoder = nn.ModuleList()
        previous = in_channels * pixel_shuffle**2
        for width in encoder_widths:
            self.encoder.append(UNetBlock(previous, width, **encoder_kwargs))
            previous = width
        self.pool = nn.MaxPool2d(kernel_size=2, ceil_mode=True)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.decoder = nn.ModuleList()
        for skip, width in zip(reversed(encoder_widths[:-1]), decoder_widths):
            self.decoder.append(UpStage(previous, skip, width, upsample, **decoder_kwargs))
            previous = width
        self.head = nn.Conv2d(previous, classes * pixel_shuffle**2, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cell_size == 1:
            return self._unet(x)
        height, width = x.shape[-2:]
        pad = (0, -width % self.cell_size, 0, -height % self.cell_size)
        cells = F.pixel_unshuffle(F.pad(x, pad, mode="replicate") if any(pad) else x, self.cell_size)
        return F.pixel_shuffle(self._unet(cells), self.cell_size)[..., :height, :width]

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(self.pool(x) if i else x)
            skips.append(x)
        x = self.dropout(skips.pop())
        for stage in self.decoder:
            x = stage(x, skips.pop())
        return self.head(x)


@register_model("unet")
def unet(cfg: UNetConfig) -> UNet:
    return UNet(
        cfg.channels,
        cfg.classes,
        block=cfg.block,
        base_channels=cfg.base_channels,
        depth=cfg.depth,
        upsample=cfg.upsample,
        bottleneck_factor=cfg.bottleneck_factor,
        se_reduction=cfg.se_reduction,
        dropout=cfg.dropout,
        decoder_residual=cfg.decoder_residual,
        pixel_shuffle=cfg.pixel_shuffle,
    )
