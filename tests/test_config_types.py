"""Config types: frozen sections, the typed training size, one `validate` for the rules between
settings, model settings by family, and configs saved with the earlier flat model section."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_model

from carvana_seg.commands.cli import parse_config_args
from carvana_seg.config import (
    ConfigError,
    Size,
    SmpConfig,
    UNetConfig,
    config_from_dict,
    load_config,
    read_saved_config,
    save_config,
    validate,
)
from carvana_seg.models import build_model, load_checkpoint
from carvana_seg.store.paths import ExperimentPaths

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"

# configs/tiny.yaml with exp.name=old as runs saved it while the model settings were one flat
# list (every family's keys, U-Net first), before the data-layout keys existed.
OLD_SAVED = """\
exp:
  name: old
  runs_dir: runs
  oof_dir: oof
data:
  root: input/synthetic
  size: 64x96
  folds: 2
  fold_seed: 42
  folds_file: ''
  cache_dir: input/cache
  use_cache: true
  num_workers: 0
  augment: true
  darken_floor: 0.0
  soft_masks: false
model:
  name: unet
  block: plain
  base_channels: 8
  depth: 3
  upsample: transpose
  bottleneck_factor: 1
  se_reduction: 16
  dropout: 0.0
  decoder_residual: false
  pixel_shuffle: 1
  in_channels: 3
  classes: 1
  arch: Unet
  encoder: resnet34
  encoder_weights: null
train:
  epochs: 2
  batch_size: 4
  lr: 0.003
  weight_decay: 0.0001
  warmup_epochs: 0.2
  schedule: cosine
  loss: bce_dice
  precision: 'no'
  grad_accum: 1
  grad_clip: 1.0
  ema: 0.0
  keep: last
  keep_state: false
  val_every: 1
  early_stop: 0
  seed: 42
  channels_last: true
  compile: false
  trackers: csv
"""


# ---- frozen ------------------------------------------------------------------------------


def test_a_loaded_config_refuses_assignment_and_derives_with_replace():
    cfg = load_config(TINY)
    for section, key, value in [("train", "epochs", 3), ("exp", "runs_dir", "elsewhere"), ("data", "size", Size(1, 1)), ("model", "block", "se")]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(getattr(cfg, section), key, value)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model = SmpConfig()
    derived = replace(cfg, exp=replace(cfg.exp, runs_dir="elsewhere"))
    assert derived.exp.runs_dir == "elsewhere" and cfg.exp.runs_dir == "runs" and derived.model is cfg.model


# ---- the typed size ---------------------------------------------------------------------


def test_size_is_parsed_once_into_height_and_width(tmp_path):
    cfg = load_config(TINY, ["data.size=48x72"])
    assert isinstance(cfg.data.size, Size) and (cfg.data.size.height, cfg.data.size.width) == (48, 72)
    assert cfg.data.size == (48, 72) and str(cfg.data.size) == "48x72" and f"{cfg.data.size}" == "48x72"
    assert load_config(None).data.size == Size(320, 480)  # the default, typed too
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["size"] == "48x72"  # saved as the text typed
    assert read_saved_config(tmp_path / "config.yaml").data.size == Size(48, 72)


@pytest.mark.parametrize("text", ["64", "64x", "0x96", "64x96x3", "axb", "-64x96"])
def test_a_bad_size_is_refused_naming_the_key(text):
    with pytest.raises(ConfigError, match=r"^data\.size: expected HxW"):
        load_config(None, [f"data.size={text}"])


# ---- validate: the rules between settings, at load -----------------------------------------


CROSS_FIELD = [
    (["train.early_stop=2"], r"^train\.early_stop needs train\.keep=best"),
    (["data.soft_masks=true", "train.loss=lovasz"], r"^data\.soft_masks needs a loss that takes soft targets \(bce_dice, bce\), not 'lovasz'$"),
    (["model.bottleneck_factor=3"], r"^model\.base_channels: 2 x 64 is not divisible by the width factor 3 \(model\.bottleneck_factor=3\)$"),
    (["model.base_channels=1", "model.bottleneck_factor=2", "model.upsample=bilinear"],
     r"^model\.base_channels: 2 x 1 is not divisible by the width factor 4 \(model\.bottleneck_factor=2, x2 for model\.upsample=bilinear\)$"),
]


@pytest.mark.parametrize("overrides, message", CROSS_FIELD)
def test_rules_between_settings_are_refused_at_load_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_same_settings_pass_once_made_consistent():
    assert load_config(None, ["train.early_stop=2", "train.keep=best"]).train.early_stop == 2
    assert load_config(None, ["data.soft_masks=true", "train.loss=bce"]).data.soft_masks
    assert load_config(None, ["model.bottleneck_factor=2", "model.upsample=bilinear"]).model.bottleneck_factor == 2
    with torch.device("meta"):  # and the model that passes builds
        build_model(load_config(None, ["model.base_channels=2", "model.bottleneck_factor=4"]).model)


@pytest.mark.parametrize("overrides, message", CROSS_FIELD)
def test_a_saved_config_breaking_a_rule_is_refused_when_read(tmp_path, overrides, message):
    tree = load_config(None).to_dict()
    for item in overrides:
        key, _, text = item.partition("=")
        section, _, name = key.partition(".")
        tree[section][name] = yaml.safe_load(text)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    with pytest.raises(ConfigError, match=f"^{path}: " + message.lstrip("^")):
        read_saved_config(path)


def test_validate_checks_a_config_built_in_code():
    cfg = load_config(None)
    assert validate(cfg) is cfg
    with pytest.raises(ConfigError, match=r"^train\.early_stop needs train\.keep=best"):
        validate(replace(cfg, train=replace(cfg.train, early_stop=1)))
    with pytest.raises(ConfigError, match=r"^train\.epochs: must be >= 1, got 0"):
        validate(replace(cfg, train=replace(cfg.train, epochs=0)))
    with pytest.raises(ConfigError, match=r"^model\.name: smp takes SmpConfig settings, not UNetConfig"):
        validate(replace(cfg, model=replace(cfg.model, name="smp")))


def test_the_model_constructor_still_refuses_for_direct_use():
    with pytest.raises(ValueError, match="not divisible by the width factor 3"):
        build_model(UNetConfig(bottleneck_factor=3))


# ---- model settings by family ------------------------------------------------------------


def test_model_name_picks_the_family_settings():
    unet = load_config(None, ["model.block=se"]).model
    smp = load_config(None, ["model.name=smp", "model.encoder=resnet18"]).model
    assert type(unet) is UNetConfig and unet.block == "se" and not hasattr(unet, "encoder")
    assert type(smp) is SmpConfig and smp.encoder == "resnet18" and not hasattr(smp, "block")
    assert set(load_config(None, ["model.name=smp"]).to_dict()["model"]) == {"name", "in_channels", "classes", "arch", "encoder", "encoder_weights"}


@pytest.mark.parametrize(
    "overrides, key, owner, name",
    [(["model.encoder=resnet18"], "model.encoder", "smp", "unet"),
     (["model.encoder_weights=imagenet"], "model.encoder_weights", "smp", "unet"),
     (["model.name=smp", "model.block=se"], "model.block", "unet", "smp"),
     (["model.base_channels=8", "model.name=smp"], "model.base_channels", "unet", "smp")],
)
def test_a_key_of_the_other_family_is_refused_in_one_line(overrides, key, owner, name):
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    message = str(caught.value)
    assert message == f"{key}: a setting of model.name={owner}, but model.name is {name}: remove it, or set model.name={owner}"


def test_a_key_of_the_other_family_at_its_default_is_accepted():
    assert load_config(None, ["model.name=smp", "model.block=plain", "model.depth=4"]).model == SmpConfig()
    assert load_config(None, ["model.encoder=resnet34", "model.encoder_weights=null"]).model == UNetConfig()


def test_the_other_family_in_a_preset_names_the_file_but_a_switch_after_it_is_not_refused(tmp_path, capsys):
    (tmp_path / "shared.yaml").write_text("model:\n  base_channels: 8  # for the U-Net presets\n")
    (tmp_path / "smp.yaml").write_text("base: shared.yaml\nmodel:\n  name: smp\n  encoder: resnet18\n")
    assert load_config(tmp_path / "smp.yaml").model == SmpConfig(encoder="resnet18")  # a shared base's U-Net width
    assert load_config(TINY, ["model.name=smp"]).model == SmpConfig()  # a U-Net preset switched on the command line
    with pytest.raises(ConfigError, match=r"^model\.block: a setting of model\.name=unet"):  # set after the switch
        load_config(TINY, ["model.name=smp", "model.block=se"])
    (tmp_path / "stray.yaml").write_text("model:\n  encoder: resnet18\n")  # an smp key in a U-Net preset
    with pytest.raises(ConfigError, match=r"stray\.yaml: model\.encoder: a setting of model\.name=smp"):  # not hidden by a later model.name=unet
        load_config(tmp_path / "stray.yaml", ["model.name=unet"])
    (tmp_path / "late.yaml").write_text("base: smp.yaml\nmodel:\n  depth: 5\n")  # after the base that picked smp
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'late.yaml'}: model\.depth: a setting of model\.name=unet"):
        load_config(tmp_path / "late.yaml")
    (tmp_path / "mixed.yaml").write_text("model:\n  name: smp\n  base_channels: 8\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'mixed.yaml'}: model\.base_channels: a setting of model\.name=unet"):
        load_config(tmp_path / "mixed.yaml")
    with pytest.raises(SystemExit) as exit_:  # a script: exit 2, one line
        parse_config_args(None, argv=["model.encoder=resnet18"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("config error: model.encoder: a setting of model.name=smp")


# ---- configs saved with the flat model section ---------------------------------------------


def test_an_old_flat_saved_config_still_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OLD_SAVED)
    assert read_saved_config(path) == load_config(TINY, ["exp.name=old", "model.in_channels=3"])  # the saved in_channels
    # an smp run then: the inert U-Net keys (block se here) never reached its model
    tree = yaml.safe_load(OLD_SAVED)
    tree["model"].update(name="smp", block="se", encoder="resnet18")
    assert config_from_dict(tree).model == SmpConfig(encoder="resnet18", in_channels=3)


def test_a_run_saved_with_the_flat_config_is_resumed_and_its_weights_load(tmp_path):
    cfg = load_config(TINY, ["exp.name=old", "model.in_channels=3", f"exp.runs_dir={tmp_path / 'runs'}", f"exp.oof_dir={tmp_path / 'oof'}"])
    tree = yaml.safe_load(OLD_SAVED)
    tree["exp"].update(runs_dir=cfg.exp.runs_dir, oof_dir=cfg.exp.oof_dir)
    paths = ExperimentPaths.of(cfg)
    paths.run_dir.mkdir(parents=True)
    paths.config.write_text(yaml.safe_dump(tree, sort_keys=False))
    paths.claim(cfg)  # the same config: accepted as is
    assert paths.config.read_text() == yaml.safe_dump(tree, sort_keys=False)
    with pytest.raises(ConfigError, match=r"model\.name: 'unet' -> 'smp'"):  # another family: listed, not a KeyError
        paths.claim(replace(cfg, model=SmpConfig()))
    model = build_model(cfg.model)
    save_model(model, str(tmp_path / "model.safetensors"), metadata={"config": json.dumps(tree)})
    loaded, loaded_cfg = load_checkpoint(tmp_path / "model.safetensors")
    assert loaded_cfg == cfg
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
