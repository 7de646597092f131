"""Fold each BatchNorm into the convolution before it, for inference.

In eval mode a BatchNorm is a fixed per-channel scale and shift, so the convolution that
feeds it can absorb it (w' = w * scale, b' = (b - mean) * scale + beta): the network
computes the same function (to float rounding, ~1e-7 on probabilities) in one pass over
each feature map instead of two. Measured on the 2-core CPU (best of 15, one thread):
configs/tiny.yaml's U-Net, batch 16 at 64x96, 27.1 ms a forward pass against 29.9.

Only a Conv2d directly followed by a BatchNorm2d inside one nn.Sequential is folded:
there the order is certain (the custom U-Net's blocks, smp's Conv2dReLU). BatchNorms
wired up in a forward() (timm's ResNet blocks) are left as they are.
"""

from __future__ import annotations

from itertools import pairwise

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold in place every (Conv2d, BatchNorm2d) pair of consecutive Sequential children of an
    eval-mode model; the BatchNorm becomes an Identity. Returns the model."""
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model: training BatchNorm uses batch statistics")
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (conv_name, conv), (norm_name, norm) in pairwise(children):
            if type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d and norm.running_mean is not None:
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
    return model
