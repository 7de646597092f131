"""Model size and cost, measured rather than guessed: parameters, FLOPs, a layer table.

FLOPs come from torch.utils.flop_counter.FlopCounterMode, which counts 2 FLOPs per
multiply-add of convolutions and matmuls (pooling, norms and activations are not
counted). Count on a model built under `torch.device("meta")` to get the number without
computing anything.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on an input of `input_shape` (B x C x H x W), in eval mode.

    Eval mode so that counting does not update BatchNorm statistics; the model's mode is restored.
    """
    parameter = next(model.parameters())
    x = torch.zeros(input_shape, device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def summarize(model: nn.Module, input_shape: tuple[int, ...], depth: int = 3) -> str:
    """torchinfo's layer table (ending in `Total params` and mult-adds) plus the FLOP count."""
    import torchinfo

    device = next(model.parameters()).device
    table = torchinfo.summary(
        model,
        input_size=input_shape,
        depth=depth,
        col_names=("input_size", "output_size", "num_params", "mult_adds"),
        device=device,
        verbose=0,
    )
    gflops = forward_flops(model, input_shape) / 1e9
    return f"{table}\nForward GFLOPs (torch.utils.flop_counter, 2 per multiply-add): {gflops:.2f}"
