"""Pretrained encoder weights from a local file, for machines without internet.

Why: `model.encoder_weights=imagenet` downloads, which a Kaggle notebook or an offline
cluster cannot. `model.encoder_weights=PATH` (a `.safetensors` file, or a folder holding
`model.safetensors`) loads the encoder's state dict from disk instead: the dict of
`model.encoder` as smp builds it (`safetensors.torch.save_file(model.model.encoder.state_dict(), PATH)`);
for a `tu-<timm name>` encoder, a timm features-only model's dict (keys without smp's
`model.` prefix) fits too. Safetensors only: a pickled checkpoint could run code when loaded.

A file that does not fit (missing or unexpected keys, or another shape) is one error naming
the file and the first keys at fault, never a partial load.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from carvana_seg.config import ConfigError

WEIGHTS_FILE = "model.safetensors"  # what a folder value holds (as a Hugging Face snapshot does)
SHOWN = 3  # keys named per kind of misfit


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN]) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def load_encoder_weights(encoder: nn.Module, source: str, encoder_name: str) -> None:
    """Load the encoder's weights from `source` (file or folder), strictly."""
    path = Path(source)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise ConfigError(f"model.encoder_weights: {path} not found (a .safetensors file of the encoder's state dict, or a folder with {WEIGHTS_FILE})")
    state = load_file(str(path))
    expected = encoder.state_dict()
    prefix = "model."  # smp's wrapper of a timm encoder holds it as `.model`
    if all(k.startswith(prefix) for k in expected) and not any(k.startswith(prefix) for k in state):
        state = {prefix + k: v for k, v in state.items()}
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} (encoder: {tuple(v.shape)})" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing:
        problems.append(f"missing {len(missing)} keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_names(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ: {_names(shapes)}")
    if problems:
        raise ConfigError(f"model.encoder_weights: {path} does not fit encoder {encoder_name!r}: {'; '.join(problems)}")
    encoder.load_state_dict(state, strict=True)
