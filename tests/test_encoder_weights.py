"""`model.encoder_weights=PATH`: an smp encoder's weights from a local safetensors file (offline),
loaded exactly, and a file that does not fit the encoder refused naming it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from carvana_seg.config import ConfigError, load_config
from carvana_seg.models.registry import build_model


def smp_config(*overrides: str):
    return load_config(None, ["model.name=smp", "model.arch=Unet", "model.encoder=resnet18", *overrides]).model


def random_encoder_file(path, *overrides: str, seed: int = 1, drop: str | None = None) -> dict:
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in build_model(smp_config(*overrides)).model.encoder.state_dict().items() if k != drop}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


def test_local_encoder_weights_are_loaded_from_a_file_or_folder(tmp_path):
    saved = random_encoder_file(tmp_path / "enc" / "model.safetensors")
    for value in (str(tmp_path / "enc" / "model.safetensors"), str(tmp_path / "enc")):
        torch.manual_seed(2)  # another initialisation: only the load can make them equal
        loaded = build_model(smp_config(f"model.encoder_weights={value}")).model.encoder.state_dict()
        assert loaded.keys() == saved.keys()
        assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    torch.manual_seed(2)
    fresh = build_model(smp_config()).model.encoder.state_dict()
    assert not torch.equal(fresh["conv1.weight"], saved["conv1.weight"])


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: random_encoder_file(p, "model.encoder=resnet34"), r"unexpected 96 keys: layer1\.2\.bn1\.bias"),
        (lambda p: random_encoder_file(p, drop="layer4.1.bn2.weight"), r"missing 1 keys: layer4\.1\.bn2\.weight"),
        (lambda p: random_encoder_file(p, "model.in_channels=1"), r"1 shapes differ: conv1\.weight \(64, 1, 7, 7\) \(encoder: \(64, 3, 7, 7\)\)"),
    ],
)
def test_an_encoder_file_that_does_not_fit_is_refused_naming_it(tmp_path, make, problem):
    path = tmp_path / "enc.safetensors"
    make(path)
    with pytest.raises(ConfigError, match=problem) as err:
        build_model(smp_config(f"model.encoder_weights={path}"))
    message = str(err.value)
    assert message.startswith(f"model.encoder_weights: {path} does not fit encoder 'resnet18'") and "\n" not in message


def test_a_missing_or_pickled_encoder_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path / 'none.safetensors'} not found"):
        build_model(smp_config(f"model.encoder_weights={tmp_path / 'none.safetensors'}"))
    with pytest.raises(ConfigError, match="is a pickled checkpoint, never loaded here"):
        smp_config(f"model.encoder_weights={tmp_path / 'resnet18.pth'}")
    assert smp_config("model.encoder_weights=imagenet").encoder_weights == "imagenet"  # still a download name
