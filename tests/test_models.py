"""Models: reference parameter counts, any-size shapes, registry errors, channels_last, checkpoints."""

from __future__ import annotations

import dataclasses
import runpy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from carvana_seg.config import MODEL_FAMILIES, Config, ModelConfig, SmpConfig, UNetConfig, load_config
from carvana_seg.models import available_models, build_model, load_checkpoint, save_checkpoint
from carvana_seg.models.stats import count_parameters, forward_flops

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
TINY_UNET = dict(base_channels=4, depth=4)
SMP_UNET = dict(name="smp", arch="Unet", encoder="resnet18")


def _output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (dict(block="plain", in_channels=1), 31_042_369),
        (dict(block="plain", in_channels=3), 31_043_521),
        (dict(block="se", bottleneck_factor=2, in_channels=3), 13_413_761),
        (dict(block="res", in_channels=3), 31_742_017),
    ],
)
def test_reference_parameter_counts(overrides: dict, expected: int) -> None:
    cfg = UNetConfig(base_channels=64, depth=4, upsample="transpose", classes=1, **overrides)
    with torch.device("meta"):  # counts need no storage
        model = build_model(cfg)
    assert count_parameters(model) == expected


@pytest.mark.parametrize("block", ["plain", "se", "res", "res_se"])
@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_unet_output_matches_any_input_size(block: str, upsample: str) -> None:
    model = build_model(UNetConfig(block=block, upsample=upsample, classes=2, decoder_residual=True, **TINY_UNET))
    for height, width in [(97, 65), (64, 48), (7, 5), (1, 1)]:
        assert _output(model, torch.randn(2, 3, height, width)).shape == (2, 2, height, width)


def test_unet_full_carvana_size_and_half() -> None:
    model = build_model(UNetConfig(base_channels=2, depth=4, in_channels=1))
    for height, width in [(1280, 1918), (640, 959)]:
        assert _output(model, torch.randn(1, 1, height, width)).shape == (1, 1, height, width)


@pytest.mark.parametrize("cell", [2, 3])
def test_pixel_shuffle_unet_output_matches_any_input_size(cell: int) -> None:
    model = build_model(UNetConfig(block="res", pixel_shuffle=cell, classes=2, **TINY_UNET))
    for height, width in [(97, 65), (64, 48), (7, 5), (1, 1)]:
        assert _output(model, torch.randn(2, 3, height, width)).shape == (2, 2, height, width)


def test_pixel_shuffle_unet_costs_a_half_size_unet() -> None:
    plain = build_model(UNetConfig(block="res", base_channels=16, depth=4))
    shuffled = build_model(UNetConfig(block="res", base_channels=16, depth=4, pixel_shuffle=2))
    half_size, full_size = forward_flops(plain, (1, 3, 64, 96)), forward_flops(shuffled, (1, 3, 128, 192))
    assert 1.0 < full_size / half_size < 1.05  # the first convolution reads 4x the channels


def test_pixel_shuffle_unet_resolves_detail_inside_its_cells() -> None:
    """Target: each pixel's own sign. A map that is constant on 2x2 cells (a half-size U-Net,
    upsampled) gets 69% of random pixels right on average; the shuffled U-Net learns far more."""
    torch.manual_seed(0)
    model = build_model(UNetConfig(block="plain", base_channels=16, depth=1, pixel_shuffle=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        x = torch.randn(8, 3, 16, 16)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), (x[:, :1] > 0).float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = torch.randn(8, 3, 16, 16)
    accuracy = ((_output(model, x) > 0) == (x[:, :1] > 0)).float().mean().item()
    assert accuracy > 0.85


@pytest.mark.parametrize("arch", ["Unet", "FPN", "DeepLabV3Plus"])
def test_smp_models_pad_and_crop_any_size(arch: str) -> None:
    model = build_model(SmpConfig(**dict(SMP_UNET, arch=arch), in_channels=1, classes=3))
    for height, width in [(97, 65), (20, 30)]:
        assert _output(model, torch.randn(1, 1, height, width)).shape == (1, 3, height, width)


def test_dropout_and_bottleneck_options_train() -> None:
    model = build_model(UNetConfig(block="res_se", dropout=0.2, bottleneck_factor=2, **TINY_UNET)).train()
    out = model(torch.randn(2, 3, 33, 47))
    out.mean().backward()
    assert out.shape == (2, 1, 33, 47)
    assert all(p.grad is not None for p in model.parameters())


def test_registry_lists_models_and_rejects_unknown_names() -> None:
    assert {"unet", "smp"} <= set(available_models())
    with pytest.raises(ValueError, match=r"unknown model.name 'vnet'; available: .*smp.*unet"):
        build_model(ModelConfig(name="vnet"))
    with pytest.raises(ValueError, match=r"unknown model.block 'dense'; available: plain, se, res, res_se"):
        build_model(UNetConfig(block="dense"))
    with pytest.raises(ValueError, match=r"unknown model.upsample 'nearest'; available: transpose, bilinear"):
        build_model(UNetConfig(upsample="nearest"))
    with pytest.raises(ValueError, match=r"unknown model.arch 'UNetX'; available: Unet, UnetPlusPlus"):
        build_model(SmpConfig(arch="UNetX"))
    with pytest.raises(ValueError, match=r"unknown model.encoder 'resnet35'.*resnet34"):
        build_model(SmpConfig(encoder="resnet35"))
    with pytest.raises(ValueError, match=r"unknown timm encoder 'not_a_net'"):
        build_model(SmpConfig(encoder="tu-not_a_net"))


def test_registry_accepts_timm_encoders() -> None:
    model = build_model(SmpConfig(encoder="tu-resnet10t"))
    assert _output(model, torch.randn(1, 3, 40, 50)).shape == (1, 1, 40, 50)


@pytest.mark.parametrize("overrides", [dict(block="res_se", **TINY_UNET), dict(block="res", pixel_shuffle=2, **TINY_UNET), SMP_UNET])
def test_channels_last_matches_contiguous(overrides: dict) -> None:
    model = build_model(MODEL_FAMILIES[overrides.get("name", "unet")](**overrides))
    x = torch.randn(2, 3, 97, 65)
    expected = _output(model, x)
    model = model.to(memory_format=torch.channels_last)
    actual = _output(model, x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "overrides",
    [["model.block=res_se", "model.base_channels=4"], ["model.base_channels=4", "model.pixel_shuffle=2"], ["model.name=smp", "model.encoder=resnet18"]],
)
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path, overrides: list[str]) -> None:
    cfg = load_config(None, overrides)
    model = build_model(cfg.model)
    model(torch.randn(2, 3, 32, 32))  # one training-mode pass so BatchNorm statistics are not defaults
    x = torch.randn(2, 3, 37, 53)
    expected = _output(model, x)

    path = save_checkpoint(model.to(memory_format=torch.channels_last), cfg, tmp_path / "fold0")
    assert path == tmp_path / "fold0" / "model.safetensors"
    assert (tmp_path / "fold0" / "config.yaml").is_file()
    loaded, loaded_cfg = load_checkpoint(tmp_path / "fold0")

    assert loaded_cfg == cfg
    assert torch.equal(_output(loaded, x), expected)


def test_checkpoint_rejects_a_config_that_cannot_rebuild_the_model(tmp_path: Path) -> None:
    cfg = Config(model=UNetConfig(**TINY_UNET))
    model = build_model(dataclasses.replace(cfg.model, block="se"))
    with pytest.raises(ValueError, match="do not match"):
        save_checkpoint(model, cfg, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_checkpoint_without_config_metadata_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="no config"):
        load_checkpoint(tmp_path)


def test_forward_flops_counts_two_per_multiply_add() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    assert forward_flops(conv, (2, 3, 10, 12)) == 2 * (2 * 10 * 12) * (8 * 3 * 3 * 3)
    model = build_model(UNetConfig(**TINY_UNET)).train()
    forward_flops(model, (1, 3, 16, 16))
    assert model.training


def test_summarize_model_cli_prints_table_and_total(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    args = ["model.base_channels=4", "model.block=se", "--input-size", "3x64x96"]
    monkeypatch.setattr(sys, "argv", ["summarize_model.py", *args])
    runpy.run_path(str(REPO / "scripts" / "summarize_model.py"), run_name="__main__")
    out = capsys.readouterr().out
    expected = count_parameters(build_model(UNetConfig(base_channels=4, block="se")))
    assert f"Total params: {expected:,}" in out
    assert "UNetBlock" in out and "mult-adds" in out and "Forward GFLOPs" in out
