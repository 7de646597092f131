"""Experiment configuration: typed defaults, YAML presets and strict `key=value` overrides.

Every tunable lives here as a named default. A preset YAML lists only what differs (from
the defaults, or from the preset it names as `base:`); a command-line override such as `train.epochs=3` replaces one value. Unknown keys and
values of the wrong type are errors that name the key, so a typo never trains the
wrong model silently. The resolved config is saved next to every result it made.

A loaded config is frozen: code that needs a variant builds one with `dataclasses.replace`.
`model.name` picks the model family's settings (`UNetConfig` or `SmpConfig`); a setting of the
other family is refused unless it is at its default or was set before `model.name` was (by a
shared `base:` file, or by a preset whose family an override switches). `data.size` is read
once into a `Size` (height, width). Rules that tie settings together live in `validate`, run
once when a config is loaded or read back.

Values are read as the text typed and converted by the field's type: a text field keeps
`no`, `off` or `yes` as words (YAML 1.1 would turn them into booleans and refuse the
documented `train.precision=no`). Choice fields, impossible numbers and names that are
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
from typing import Any, NamedTuple

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
SOFT_TARGET_LOSSES = ("bce_dice", "bce")  # the losses well defined for targets between 0 and 1 (data.soft_masks)
SCHEDULE_CHOICES = ("cosine", "onecycle")  # training/trainer.py lr_factor
KEEP_CHOICES = ("last", "best")  # which epoch's weights and OOF a fold keeps
LAYOUT_CHOICES = ("carvana", "folders", "csv")  # data/layouts.py
RLE_ORDER_CHOICES = ("row", "column")  # ops/rle.py RleFormat
GROUP_CHOICES = ("regex", "column", "none")  # data/folds.py image_groups
CHOICES: dict[str, tuple[str, ...]] = {
    "train.precision": PRECISION_CHOICES,
    "model.name": MODEL_CHOICES,
    "model.block": BLOCK_CHOICES,
    "model.upsample": UPSAMPLE_CHOICES,
    "train.loss": LOSS_CHOICES,
    "train.schedule": SCHEDULE_CHOICES,
    "train.keep": KEEP_CHOICES,
    "data.layout": LAYOUT_CHOICES,
    "data.rle_order": RLE_ORDER_CHOICES,
    "data.groups": GROUP_CHOICES,
}

# Numbers that cannot work, refused up front instead of failing (or silently doing nothing) mid-run.
# key -> (test, what the test asks, in words). Every float must also be finite.
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "data.folds": (lambda v: v >= 2, ">= 2"),
    "data.fold_seed": (lambda v: 0 <= v < 2**32, "between 0 and 2**32 - 1 (a numpy seed)"),
    "data.num_workers": (lambda v: v >= 0, ">= 0"),
    "data.darken_floor": (lambda v: 0 <= v <= 1, "a probability between 0 and 1"),
    "data.rle_start": (lambda v: v in (0, 1), "0 or 1"),
    "model.base_channels": (lambda v: v >= 1, ">= 1"),
    "model.depth": (lambda v: v >= 1, ">= 1"),
    "model.bottleneck_factor": (lambda v: v >= 1, ">= 1"),
    "model.se_reduction": (lambda v: v >= 1, ">= 1"),
    "model.dropout": (lambda v: 0 <= v < 1, ">= 0 and < 1"),
    "model.pixel_shuffle": (lambda v: v >= 1, ">= 1"),
    "model.in_channels": (lambda v: v >= 0, ">= 0 (0: the data's channels)"),
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


@dataclass(frozen=True)
class ExpConfig:
    name: str = ""  # names runs/<name> and oof/<name>; default: the config file's stem
    runs_dir: str = "runs"
    oof_dir: str = "oof"


class Size(NamedTuple):
    """A training size in pixels, (height, width); written `HxW` (`320x480`) in a config."""

    height: int
    width: int

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"


@dataclass(frozen=True)
class DataConfig:
    root: str = "input/synthetic"  # a folder in the Carvana layout
    size: Size = Size(320, 480)  # training size, HxW (`data.size=320x480`)
    folds: int = 4  # number of grouped folds
    fold_seed: int = 42
    folds_file: str = ""  # default: <root>/folds.csv (set it when the data folder is read-only)
    cache_dir: str = "input/cache"  # resized uint8 images and masks, one memmap per (dataset, size)
    use_cache: bool = True
    num_workers: int = 2
    augment: bool = True
    darken_floor: float = 0.0  # probability of darkening the floor around the car (data/floor.py)
    soft_masks: bool = False  # train on each pixel's car coverage (0-1), not 0/1: keeps sub-pixel outlines
    # --- your own competition (docs/layouts.md) ---
    layout: str = "carvana"  # carvana | folders (images and masks in two folders) | csv (masks as RLE rows)
    train_dir: str = "train"  # folders, csv: the training images' folder under data.root
    mask_dir: str = "train_masks"  # folders: the masks' folder (the same stems as the images)
    test_dir: str = "test"  # folders, csv: the test images' folder
    masks_csv: str = "train_masks.csv"  # csv: the masks' table
    id_column: str = "img"  # csv: the image id column (with or without the file extension)
    rle_column: str = "rle_mask"  # csv: the RLE column
    rle_order: str = "row"  # RLE pixel order: row (Carvana) | column (TGS and many others)
    rle_start: int = 1  # index of the first pixel in the RLE: 1 (Carvana) or 0
    rle_empty: str = ""  # how an empty mask is written in the RLE column (e.g. "" or "-")
    intensity_range: str = ""  # LO-HI mapped to 0-255 (e.g. 0-4095 for 12-bit TIFFs); "": the file's full range (8/16-bit)
    groups: str = "regex"  # fold groups: regex (on the id) | column (of data.metadata_csv) | none (each image alone)
    group_regex: str = r"^(?P<group>.+)_\d+$"  # regex: the named group `group` of the id (Carvana: the car before _NN)
    metadata_csv: str = "metadata.csv"  # column: the table that holds each id's group
    group_column: str = ""  # column: the column of data.metadata_csv holding the group (its id column is data.id_column)

    @property
    def folds_path(self) -> Path:
        return Path(self.folds_file) if self.folds_file else Path(self.root) / "folds.csv"


@dataclass(frozen=True)
class ModelConfig:
    """What every model takes. A loaded config holds the family `name` picks (MODEL_FAMILIES)."""

    name: str = "unet"  # a name in the model registry: unet | smp
    in_channels: int = 0  # 0: the data's (3 for RGB, 1 for grey), written into the run's config when training starts
    classes: int = 1

    @property
    def channels(self) -> int:
        """The network's input channels: `in_channels`, or 3 (RGB) where it is left to data no run has read."""
        return self.in_channels or 3

    def without_downloads(self) -> ModelConfig:
        """The same model with nothing to download (weights that come from a checkpoint instead)."""
        return self


@dataclass(frozen=True)
class UNetConfig(ModelConfig):
    """The custom U-Net family (models/unet.py): `model.name=unet`."""

    block: str = "plain"  # plain | se | res | res_se
    base_channels: int = 64
    depth: int = 4
    upsample: str = "transpose"  # transpose | bilinear
    bottleneck_factor: int = 1
    se_reduction: int = 16
    dropout: float = 0.0
    decoder_residual: bool = False
    pixel_shuffle: int = 1  # f > 1: the U-Net runs at 1/f of the input size on f*f-pixel cells (unet.py)


@dataclass(frozen=True)
class SmpConfig(ModelConfig):
    """segmentation-models-pytorch baselines (models/smp_models.py): `model.name=smp`."""

    name: str = "smp"
    arch: str = "Unet"
    encoder: str = "resnet34"
    encoder_weights: str | None = None  # null | imagenet (downloaded) | a local .safetensors file or folder (models/encoder_weights.py)

    def without_downloads(self) -> SmpConfig:
        return dataclasses.replace(self, encoder_weights=None)


# model.name -> its settings; keys are MODEL_CHOICES (checked by tests/test_config.py).
MODEL_FAMILIES: dict[str, type[ModelConfig]] = {"unet": UNetConfig, "smp": SmpConfig}


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Config:
    exp: ExpConfig = field(default_factory=ExpConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=UNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Section -> key -> value as a config file writes it (the size as `HxW` text)."""
        return {
            f.name: {k: str(v) if isinstance(v, Size) else v for k, v in dataclasses.asdict(getattr(self, f.name)).items()}
            for f in dataclasses.fields(self)
        }


def parse_size(text: str, key: str = "size") -> Size:
    """Parse `HxW` (e.g. `320x480`) into (height, width)."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"{key}: expected HxW with positive integers (e.g. 320x480), got {text!r}")
    return Size(int(parts[0]), int(parts[1]))


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
    if annotation is Size:
        return value if isinstance(value, Size) else parse_size(value, key)
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


def validate(cfg: Config) -> Config:
    """Check every setting on its own and the rules that tie settings together; return `cfg`.

    Loading a config and reading a saved one both end here, so a combination that cannot
    train fails before anything is written, in one line that names the key.
    """
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        for item in dataclasses.fields(values):
            _check_value(f"{section.name}.{item.name}", getattr(values, item.name))
    family = MODEL_FAMILIES[cfg.model.name]
    if type(cfg.model) is not family:
        raise ConfigError(f"model.name: {cfg.model.name} takes {family.__name__} settings, not {type(cfg.model).__name__}")
    if cfg.train.early_stop and cfg.train.keep != "best":
        raise ConfigError("train.early_stop needs train.keep=best: a run that stops early has no last epoch to keep")
    if cfg.data.soft_masks and cfg.train.loss not in SOFT_TARGET_LOSSES:
        raise ConfigError(f"data.soft_masks needs a loss that takes soft targets ({', '.join(SOFT_TARGET_LOSSES)}), not {cfg.train.loss!r}")
    if isinstance(cfg.model, UNetConfig):
        _validate_unet(cfg.model)
    return cfg


def _validate_unet(model: UNetConfig) -> None:
    """The U-Net's narrowed stages divide every width from `base_channels * 2` up by the
    bottleneck factor (and by 2 more for bilinear upsampling, which keeps the channel count)."""
    bilinear = model.upsample == "bilinear"
    factor = model.bottleneck_factor * (2 if bilinear else 1)
    if (2 * model.base_channels) % factor:
        raise ConfigError(
            f"model.base_channels: 2 x {model.base_channels} is not divisible by the width factor {factor} "
            f"(model.bottleneck_factor={model.bottleneck_factor}{', x2 for model.upsample=bilinear' if bilinear else ''})"
        )


PRESET_RANK, OVERRIDE_RANK = 0, 1  # a preset's n-th `base:` file down the chain ranks -n


class Setting(NamedTuple):
    value: Any  # converted by the key's type
    where: str  # the file that set it, "" for an override
    rank: int = OVERRIDE_RANK  # which source set it, in the order applied: a preset's `base:` files, the preset, overrides
    model_then: str = "unet"  # the model.name in effect when it was set


Settings = dict[str, Setting]  # "section.key" -> the setting that applies (the last one set)


def _key_types(section: str) -> dict[str, Any]:
    """A section's keys and their types; the model section has the keys of every family."""
    if section == "model":
        return {key: hint for family in MODEL_FAMILIES.values() for key, hint in typing.get_type_hints(family).items()}
    return typing.get_type_hints(typing.get_type_hints(Config)[section])


def config_keys() -> list[str]:
    """Every `section.key` a config file or an override may set (for `model`: every family's keys)."""
    return [f"{section}.{key}" for section in typing.get_type_hints(Config) for key in _key_types(section)]


def _set(settings: Settings, dotted: str, value: Any, where: str = "", rank: int = OVERRIDE_RANK) -> None:
    """Record one setting, converted by its key's type and checked on its own; the last one set wins."""
    section, _, key = dotted.partition(".")
    sections = typing.get_type_hints(Config)
    if section not in sections or not key:
        raise ConfigError(f"unknown config key {dotted!r}: keys look like <section>.<key>, sections: {sorted(sections)}")
    hints = _key_types(section)
    if key not in hints:
        raise ConfigError(f"unknown config key {dotted!r}; {section} has: {', '.join(hints)}")
    value = _coerce(value, hints[key], dotted)
    _check_value(dotted, value)
    model_then = settings["model.name"].value if "model.name" in settings else ModelConfig.name
    settings[dotted] = Setting(value, where, rank, model_then)


def _model(settings: dict[str, Setting], saved: bool) -> ModelConfig:
    """The settings of the family `model.name` names.

    A key of another family is refused unless it is at that family's default, or it was a key of
    the model named when it was set and a later source (preset after base, override after
    preset) set `model.name`: a shared `base:` file serves presets of both families (the U-Nets'
    width beside smp presets), and `model.name=smp` on the command line switches a U-Net
    preset's family, its U-Net keys with it. A saved config (`saved`)
    may hold every family's keys in one flat section: the other family's keys have no effect
    on its model, so they are left out.
    """
    name, name_rank = (settings["name"].value, settings["name"].rank) if "name" in settings else (ModelConfig.name, -math.inf)
    family = MODEL_FAMILIES[name]
    own = {item.name for item in dataclasses.fields(family)}
    for key, (value, where, rank, model_then) in settings.items():
        owner, other = next((n, f) for n, f in MODEL_FAMILIES.items() if key in {item.name for item in dataclasses.fields(f)})
        if key in own or saved or (rank < name_rank and owner == model_then):
            continue
        if value != other.__dataclass_fields__[key].default:
            raise ConfigError(
                f"{where + ': ' if where else ''}model.{key}: a setting of model.name={owner}, but model.name is {name}: "
                f"remove it, or set model.name={owner}"
            )
    return family(**{key: setting.value for key, setting in settings.items() if key in own})


def _build(settings: Settings, saved: bool = False) -> Config:
    """The config the settings make (defaults for the rest), checked by `validate`."""
    sections: dict[str, dict[str, Setting]] = {name: {} for name in typing.get_type_hints(Config)}
    for dotted, setting in settings.items():
        section, _, key = dotted.partition(".")
        sections[section][key] = setting
    built: dict[str, Any] = {"model": _model(sections.pop("model"), saved)}
    for name, items in sections.items():
        built[name] = typing.get_type_hints(Config)[name](**{key: setting.value for key, setting in items.items()})
    return validate(Config(**built))


def _flatten(tree: dict[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in (tree or {}).items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: top-level key {section!r} must hold a mapping of settings")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def _apply_file(settings: Settings, path: Path, seen: tuple[Path, ...] = ()) -> None:
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
        _apply_file(settings, path.parent / str(tree.pop("base")), (*seen, path.resolve()))
    for key, value in _flatten(tree, str(path)).items():
        try:
            _set(settings, key, value, str(path), PRESET_RANK - len(seen))
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file (if any), then `key=value` overrides, checked strictly."""
    settings: Settings = {}
    if path is not None:
        _apply_file(settings, Path(path))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        _set(settings, key.strip(), text.strip())  # the text as typed: `_coerce` converts it by the field's type
    if "exp.name" not in settings or not settings["exp.name"].value:
        name = "default"
        if path is not None:
            try:
                name = check_plain_name(Path(path).stem, "exp.name")
            except PlainNameError as err:
                raise ConfigError(f"{path}: an experiment is named after its config file unless exp.name is set; {err}") from err
        settings["exp.name"] = Setting(name, "")
    return _build(settings)


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a Config saved by `save_config` (strict, like a YAML file, and validated)."""
    settings: Settings = {}
    for key, value in _flatten(tree, "saved config").items():
        _set(settings, key, value)
    return _build(settings, saved=True)


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def read_saved_config(path: str | Path) -> Config:
    """The config saved at `path`; a setting this code refuses is an error naming the file and key."""
    try:
        return config_from_dict(yaml.safe_load(Path(path).read_text()))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
