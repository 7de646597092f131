"""Fold each BatchNorm into the convolution before it, for inference.

In eval mode a BatchNorm is a fixed per-channel scale and shift, so the convolution that
feeds it can absorb it (w' = w * scale, b' = (b - mean) * scale + beta): the network
computes the same function (to float rounding, ~1e-7 on probabilities) in one pass over
each feature map instead of two.

Only a Conv2d directly followed by a BatchNorm2d inside a Sequential that runs its children
one after another (nn.Sequential's own forward: the custom U-Net's blocks, smp's Conv2dReLU
and ResNet downsample branches) is folded, and never a module with hooks: there the BN's
input is seen by nothing else. BatchNorms wired up in a forward() (the conv1/bn1 pairs of
the ResNet encoders) are left as they are, so smp models gain less than the custom U-Nets.
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
        if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
            continue  # a Sequential with its own forward may use a child's output elsewhere
        children = list(module.named_children())
        for (conv_name, conv), (norm_name, norm) in pairwise(children):
            if type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d and norm.running_mean is not None and not _hooked(conv) and not _hooked(norm):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
    return model


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)
