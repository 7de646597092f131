"""BatchNorm folded into the convolution before it (models/fold_bn.py): the same predictions,
fewer passes, and nothing folded where the order is not certain."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from carvana_seg.config import load_config
from carvana_seg.models import build_model
from carvana_seg.models.fold_bn import fold_batchnorm


def batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def with_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine terms, so a wrong fold would show."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
    return model.eval()


@pytest.mark.parametrize("overrides", [
    ["model.block=plain"], ["model.block=res_se"],
    ["model.name=smp", "model.arch=Unet", "model.encoder=resnet18", "model.encoder_weights=null"],
])
def test_folded_model_predicts_the_same(overrides):
    cfg = load_config("configs/tiny.yaml", overrides)
    model = with_statistics(build_model(cfg.model))
    folded = fold_batchnorm(copy.deepcopy(model))
    assert batchnorms(folded) < batchnorms(model)  # something was folded
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(folded(images)), torch.sigmoid(model(images)), atol=1e-5, rtol=0)


def test_custom_forward_sequential_and_training_models_are_left_alone():
    class Taps(nn.Sequential):  # uses every child's output, so its BatchNorm's input is seen elsewhere
        def forward(self, x):
            return [x := child(x) for child in self]

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), Taps(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))).eval()
    fold_batchnorm(model)
    assert isinstance(model[1], nn.Identity) and isinstance(model[2][1], nn.BatchNorm2d)
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
