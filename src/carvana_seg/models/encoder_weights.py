"""Pretrained encoder weights from a local file, for machines without internet.

Why: `model.encoder_weights=imagenet` downloads, which a Kaggle notebook or an offline
cluster cannot. `model.encoder_weights=PATH` (a `.safetensors` file, or a folder holding
`model.safetensors`) loads the encoder's state dict from disk instead: the dict of
`model.encoder` as smp builds it (`safetensors.torch.save_file(model.model.encoder.state_dict(), PATH)`);
for a `tu-<timm name>` encoder, a timm features-only model's dict (keys without smp's
`model.` prefix) fits too. Safetensors only: a pickled checkpoint could run code when loaded.

A file that does not fit (missing or unexpected keys, or another shape), that is not a whole
safetensors file (truncated, another format renamed) or not named `.safetensors` is one error
naming the file, never a partial load. The check reads the header only, so a run makes it
before it writes anything (`smp_models.check_encoder_weights`).
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from carvana_seg.config import ConfigError

WEIGHTS_FILE = "model.safetensors"  # what a folder value holds (as a Hugging Face snapshot does)
WEIGHTS_SUFFIX = ".safetensors"  # compared case-insensitively
SHOWN = 3  # keys named per kind of misfit
TIMM_PREFIX = "model."  # smp's wrapper of a timm encoder holds it as `.model`


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN]) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def weights_file(source: str) -> Path:
    """The safetensors file `source` names (a folder: its `model.safetensors`); anything else is
    one error naming it: missing, or another format (a `.pth`, `.pt.gz`, ... is never opened)."""
    path = Path(source)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise ConfigError(f"model.encoder_weights: {path} not found (a .safetensors file of the encoder's state dict, or a folder with {WEIGHTS_FILE})")
    if path.suffix.lower() != WEIGHTS_SUFFIX:
        raise ConfigError(f"model.encoder_weights: {path} is not a .safetensors file: save the encoder's state dict with safetensors.torch.save_file")
    return path


def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{key: shape} from a safetensors file's header, without reading its tensors. The header
    must be whole and cover the file exactly, so a truncated copy or another format (a pickle
    renamed `.safetensors`) is one error naming the file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(
            f"model.encoder_weights: {path} is not a complete safetensors file ({reason}): a truncated copy, or another format under that name?"
        ) from err


def check_encoder_file(expected: dict[str, tuple[int, ...]], source: str, encoder_name: str) -> tuple[Path, str]:
    """Check the file `source` names against the encoder's {key: shape} from its header alone;
    returns the file and the prefix its keys need (a timm features-only dict lacks smp's `model.`).
    Missing or unexpected keys and other shapes are one error naming the file and the first keys at fault."""
    path = weights_file(source)
    shapes = file_shapes(path)
    prefix = TIMM_PREFIX if all(k.startswith(TIMM_PREFIX) for k in expected) and not any(k.startswith(TIMM_PREFIX) for k in shapes) else ""
    shapes = {prefix + k: v for k, v in shapes.items()}
    problems = []
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    differ = [f"{k} {shapes[k]} (encoder: {v})" for k, v in expected.items() if k in shapes and shapes[k] != v]
    if missing:
        problems.append(f"missing {len(missing)} keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_names(unexpected)}")
    if differ:
        problems.append(f"{len(differ)} shapes differ: {_names(differ)}")
    if problems:
        raise ConfigError(f"model.encoder_weights: {path} does not fit encoder {encoder_name!r}: {'; '.join(problems)}")
    return path, prefix


def load_encoder_weights(encoder: nn.Module, source: str, encoder_name: str) -> None:
    """Load the encoder's weights from `source` (file or folder), strictly, once the file is checked."""
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    path, prefix = check_encoder_file(expected, source, encoder_name)
    encoder.load_state_dict({prefix + k: v for k, v in load_file(str(path)).items()}, strict=True)
