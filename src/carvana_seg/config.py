"""Experiment configuration: typed defaults, YAML presets and strict `key=value` overrides.

Every tunable lives here as a named default. A preset YAML lists only what differs (from
the defaults, or from the preset it names as `base:`); a command-line override such as `train.epochs=3` replaces one value. Unknown keys and
values of the wrong type are errors that name the key, so a typo never trains the
wrong model silently. The resolved config is saved next to every result it made.

Values are read as the text typed and converted by the field's type: a text field keeps
`no`, `off` or `yes` as words (YAML 1.1 would turn them into booleans, so the documented
`train.precision=no` was refused). Choice fields, impossible numbers and names that are
not plain folder names are refused when the config is loaded, naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_write_text
from carvana_seg.names import PlainNameError, check_plain_name


class ConfigError(PipelineError):
    """A config file or override names an unknown key or has a value of the wrong type."""


# The allowed values of every choice setting, in one place. Modules that act on a choice
# import its tuple from here; the tables keyed by these names (losses.LOSSES, blocks.BLOCK_KINDS,
# the model registry) are checked against them by tests/test_hardening.py.
PRECISION_CHOICES = ("no", "bf16", "fp16")  # accelerate's mixed precision
MODEL_CHOICES = ("unet", "smp")  # names registered in models/registry.py
BLOCK_CHOICES = ("plain", "se", "res", "res_se")  # models/blocks.py
UPSAMPLE_CHOICES = ("transpose", "bilinear")  # models/unet.py
LOSS_CHOICES = ("bce_dice", "bce", "lovasz", "focal")  # training/losses.py
SCHEDULE_CHOICES = ("cosine", "onecycle")  # training/trainer.py lr_factor
KEEP_CHOICES = ("last", "best")  # which epoch's weights and OOF a fold keeps
CHOICES: dict[str, tuple[str, ...]] = {
    "train.precision": PRECISION_CHOICES,
    "model.name": MODEL_CHOICES,
    "model.block": BLOCK_CHOICES,
    "model.upsample": UPSAMPLE_CHOICES,
    "train.loss": LOSS_CHOICES,
    "train.schedule": SCHEDULE_CHOICES,
    "train.keep": KEEP_CHOICES,
}

# Numbers that cannot work, refused up front instead of failing (or silently doing nothing) mid-run.
# key -> (test, what the test asks, in words). Every float must also be finite.
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "data.folds": (lambda v: v >= 2, ">= 2"),
    "data.fold_seed": (lambda v: 0 <= v < 2**32, "between 0 and 2**32 - 1 (a numpy seed)"),
    "data.num_workers": (lambda v: v >= 0, ">= 0"),
    "data.darken_floor": (lambda v: 0 <= v <= 1, "a probability between 0 and 1"),
    "model.base_channels": (lambda v: v >= 1, ">= 1"),
    "model.depth": (lambda v: v >= 1, ">= 1"),
    "model.bottleneck_factor": (lambda v: v >= 1, ">= 1"),
    "model.se_reduction": (lambda v: v >= 1, ">= 1"),
    "model.dropout": (lambda v: 0 <= v < 1, ">= 0 and < 1"),
    "model.pixel_shuffle": (lambda v: v >= 1, ">= 1"),
    "model.in_channels": (lambda v: v >= 1, ">= 1"),
    "model.classes": (lambda v: v >= 1, ">= 1"),
    "train.epochs": (lambda v: v >= 1, ">= 1"),
    "train.batch_size": (lambda v: v >= 1, ">= 1"),
    "train.lr": (lambda v: v >= 0, ">= 0 (0 freezes the weights: tests use it)"),
    "train.weight_decay": (lambda v: v >= 0, ">= 0"),
    "train.warmup_epochs": (lambda v: v >= 0, ">= 0"),
    "train.grad_accum": (lambda v: v >= 1, ">= 1"),
    "train.grad_clip": (lambda v: v >= 0, ">= 0 (0 disables clipping)"),
    "train.ema": (lambda v: 0 <= v < 1, ">= 0 and < 1 (0 disables the EMA)"),
    "train.val_every": (lambda v: v >= 1, ">= 1"),
    "train.early_stop": (lambda v: v >= 0, ">= 0 (0 disables early stopping)"),
    "train.seed": (lambda v: 0 <= v < 2**32, "between 0 and 2**32 - 1 (a numpy seed)"),
}

TRUE_WORDS = ("true", "yes", "on")  # what YAML 1.1 reads as booleans, accepted for bool fields only
FALSE_WORDS = ("false", "no", "off")
NULL_WORDS = ("", "null", "~", "none")  # None, for the fields that take None
INT_TEXT = re.compile(r"[-+]?\d+")


@dataclass
class ExpConfig:
    name: str = ""  # names runs/<name> and oof/<name>; default: the config file's stem
    runs_dir: str = "runs"
    oof_dir: str = "oof"


@dataclass
class DataConfig:
    root: str = "input/synthetic"  # a folder in the Carvana layout
    size: str = "320x480"  # training size HxW
    folds: int = 4  # number of grouped folds
    fold_seed: int = 42
    folds_file: str = ""  # default: <root>/folds.csv (set it when the data folder is read-only)
    cache_dir: str = "input/cache"  # resized uint8 images and masks, one memmap per (dataset, size)
    use_cache: bool = True
    num_workers: int = 2
    augment: bool = True
    darken_floor: float = 0.0  # probability of darkening the floor around the car (data/floor.py)
    soft_masks: bool = False  # train on each pixel's car coverage (0-1), not 0/1: keeps sub-pixel outlines

    @property
    def hw(self) -> tuple[int, int]:
        return parse_size(self.size, "data.size")

    @property
    def folds_path(self) -> Path:
        return Path(self.folds_file) if self.folds_file else Path(self.root) / "folds.csv"


@dataclass
class ModelConfig:
    name: str = "unet"  # a name in the model registry: unet | smp
    # custom U-Net family
    block: str = "plain"  # plain | se | res | res_se
    base_channels: int = 64
    depth: int = 4
    upsample: str = "transpose"  # transpose | bilinear
    bottleneck_factor: int = 1
    se_reduction: int = 16
    dropout: float = 0.0
    decoder_residual: bool = False
    pixel_shuffle: int = 1  # f > 1: the U-Net runs at 1/f of the input size on f*f-pixel cells (unet.py)
    in_channels: int = 3
    classes: int = 1
    # segmentation-models-pytorch baselines
    arch: str = "Unet"
    encoder: str = "resnet34"
    encoder_weights: str | None = None  # null | imagenet (downloaded) | a local .safetensors file or folder (models/encoder_weights.py)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    schedule: str = "cosine"  # cosine | onecycle
    loss: str = "bce_dice"  # bce_dice | lovasz | focal
    precision: str = "no"  # no | bf16 | fp16 (accelerate mixed precision)
    grad_accum: int = 1
    grad_clip: float = 1.0
    ema: float = 0.0  # EMA decay of weights; 0 disables
    keep: str = "last"  # weights and OOF from the last epoch, or the best validated one
    keep_state: bool = False  # keep a finished fold's resume state (runs/<exp>/fold<k>/state/, 2-3x its weights)
    val_every: int = 1  # validate every N epochs (and always after the last)
    early_stop: int = 0  # epochs without improvement before stopping (needs keep=best); 0 disables
    seed: int = 42
    channels_last: bool = True
    compile: bool = False  # torch.compile (inductor) through accelerate: faster steps after a one-off compile
    trackers: str = "csv"  # comma list: csv, tensorboard, mlflow, wandb


@dataclass
class Config:
    exp: ExpConfig = field(default_factory=ExpConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_size(text: str, key: str = "size") -> tuple[int, int]:
    """Parse `HxW` (e.g. `320x480`) into (height, width)."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"{key}: expected HxW with positive integers (e.g. 320x480), got {text!r}")
    return int(parts[0]), int(parts[1])


def _from_text(text: str, options: tuple[Any, ...]) -> Any:
    """Convert text as typed to the first type in `options` that reads it; the text itself if none does."""
    word = text.strip()
    if type(None) in options and word.lower() in NULL_WORDS:
        return None
    for option in options:
        if option is bool and word.lower() in TRUE_WORDS + FALSE_WORDS:
            return word.lower() in TRUE_WORDS
        if option is int and INT_TEXT.fullmatch(word):
            return int(word)
        if option is float:
            try:
                return float(word)
            except ValueError:
                pass
        if option is str:
            return text
    return text


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a field's type annotation; ints are accepted where floats are.

    Text (from a YAML preset or an override) is converted by the field's type, so a text
    field keeps the word as typed and `no` is a boolean only where a boolean is expected.
    """
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if isinstance(value, str):
        value = _from_text(value, options)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    names = " | ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{key}: expected {names}, got {value!r} ({type(value).__name__})")


PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".tar")  # checkpoints that load by unpickling


def local_encoder_weights(value: str | None) -> bool:
    """`model.encoder_weights` names a local file or folder (it has a '/' or a file suffix such as
    `.safetensors`), not pretrained weights smp downloads (`imagenet`, `ssl`, ...: no dot in them)."""
    return value is not None and ("/" in value or Path(value).suffix != "")


def _check_value(key: str, value: Any) -> None:
    """Refuse a value no run can use: an unknown choice, an impossible number, a name that is a path."""
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(CHOICES[key])}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    if key in RANGES and not RANGES[key][0](value):
        raise ConfigError(f"{key}: must be {RANGES[key][1]}, got {value!r}")
    if key == "model.encoder_weights" and local_encoder_weights(value) and Path(value).suffix.lower() in PICKLE_SUFFIXES:
        raise ConfigError(f"{key}: {value!r} is a pickled checkpoint, never loaded here: save the encoder's state dict with safetensors.torch.save_file")
    if key == "exp.name" and value:  # empty: named after the config file (checked then) or `default`
        try:
            check_plain_name(value, key)
        except PlainNameError as err:
            raise ConfigError(str(err)) from err


def _set(cfg: Config, dotted: str, value: Any) -> None:
    section_name, _, key = dotted.partition(".")
    sections = {f.name for f in dataclasses.fields(Config)}
    if section_name not in sections or not key:
        raise ConfigError(f"unknown config key {dotted!r}: keys look like <section>.<key>, sections: {sorted(sections)}")
    section = getattr(cfg, section_name)
    hints = typing.get_type_hints(type(section))
    if key not in hints:
        raise ConfigError(f"unknown config key {dotted!r}; {section_name} has: {', '.join(hints)}")
    value = _coerce(value, hints[key], dotted)
    _check_value(dotted, value)
    setattr(section, key, value)


def _flatten(tree: dict[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in (tree or {}).items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: top-level key {section!r} must hold a mapping of settings")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def _apply_file(cfg: Config, path: Path, seen: tuple[Path, ...] = ()) -> None:
    """Apply a YAML preset; a top-level `base: other.yaml` (relative to it) is applied first."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `base` chain loops back to itself")
    try:
        # BaseLoader: every value stays the text typed; `_coerce` converts it by the field's type.
        tree = yaml.load(path.read_text(), Loader=yaml.BaseLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, model:, train:, ...), got {type(tree).__name__}")
    if "base" in tree:
        _apply_file(cfg, path.parent / str(tree.pop("base")), (*seen, path.resolve()))
    for key, value in _flatten(tree, str(path)).items():
        try:
            _set(cfg, key, value)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file (if any), then `key=value` overrides, checked strictly."""
    cfg = Config()
    if path is not None:
        _apply_file(cfg, Path(path))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        _set(cfg, key.strip(), text.strip())  # the text as typed: `_coerce` converts it by the field's type
    if not cfg.exp.name and path is not None:
        try:
            cfg.exp.name = check_plain_name(Path(path).stem, "exp.name")
        except PlainNameError as err:
            raise ConfigError(f"{path}: an experiment is named after its config file unless exp.name is set; {err}") from err
    if not cfg.exp.name:
        cfg.exp.name = "default"
    cfg.data.hw  # validates the size early
    return cfg


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a Config saved by `save_config` (strict, like a YAML file)."""
    cfg = Config()
    for key, value in _flatten(tree, "saved config").items():
        _set(cfg, key, value)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def read_saved_config(path: str | Path) -> Config:
    return config_from_dict(yaml.safe_load(Path(path).read_text()))
