"""Checkpoints that rebuild their own model and never unpickle.

`<dir>/model.safetensors` holds the weights and, in its metadata, the resolved config as
JSON (the one source `load_checkpoint` reads); `<dir>/config.yaml` is the same config for
people. Loading parses JSON and raw tensors only, so a checkpoint cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from carvana_seg.config import Config, ConfigError, config_from_dict, save_config
from carvana_seg.io_utils import atomic_path
from carvana_seg.models.registry import build_model

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"


def _check_matches_config(model: nn.Module, cfg: Config) -> None:
    """Fail at save time, not at load time, if `cfg.model` cannot rebuild `model`."""
    with torch.device("meta"):
        expected = build_model(cfg.model.without_downloads()).state_dict()
    actual = model.state_dict()
    if {k: v.shape for k, v in expected.items()} != {k: v.shape for k, v in actual.items()}:
        raise ValueError("the model's weights do not match the model its config builds; pass the config that built it")


def save_checkpoint(model: nn.Module, cfg: Config, directory: str | Path) -> Path:
    """Write `<directory>/model.safetensors` (config JSON in its metadata) and `config.yaml`."""
    _check_matches_config(model, cfg)
    directory = Path(directory)
    path = directory / WEIGHTS_NAME
    with atomic_path(path) as tmp:
        # force_contiguous: channels_last weights are stored in the standard layout.
        save_model(model, str(tmp), metadata={"config": json.dumps(cfg.to_dict())}, force_contiguous=True)
    save_config(cfg, directory / CONFIG_NAME)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild the model from the checkpoint's config and load its weights (strictly)."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "config" not in metadata:
        raise ValueError(f"{path}: no config in the safetensors metadata; not written by save_checkpoint")
    try:
        cfg = config_from_dict(json.loads(metadata["config"]))
    except ConfigError as err:
        raise ConfigError(f"{path}: the config in its metadata: {err}") from err
    # The weights come from the file: never download pretrained encoder weights to overwrite them.
    model = build_model(cfg.model.without_downloads()).to(device)
    load_model(model, str(path), strict=True, device=str(device))
    return model, cfg
