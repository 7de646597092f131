"""Config: presets, strict overrides, saved and reloaded unchanged."""

from __future__ import annotations

import pytest

from carvana_seg.config import ConfigError, load_config, read_saved_config, save_config


def test_defaults_preset_and_overrides(tmp_path):
    preset = tmp_path / "exp_a.yaml"
    preset.write_text("model:\n  block: se\ntrain:\n  epochs: 7\n")
    cfg = load_config(preset, ["train.lr=0.01", "data.size=64x96", "model.encoder_weights=null", "train.epochs=3"])
    assert cfg.exp.name == "exp_a"  # the file's stem
    assert cfg.model.block == "se" and cfg.train.epochs == 3 and cfg.train.lr == 0.01
    assert cfg.data.hw == (64, 96) and cfg.model.encoder_weights is None


def test_int_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=2.5"])


@pytest.mark.parametrize(
    "override, key",
    [("train.epoch=3", "train.epoch"), ("trian.epochs=3", "trian.epochs"), ("train.batch_size=four", "train.batch_size"),
     ("data.size=64", "data.size"), ("model.dropout=true", "model.dropout"), ("epochs", "epochs")],
)
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*train\.epochz"):
        load_config(preset)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["exp.name=x", "model.name=smp", "train.precision=bf16"])
    save_config(cfg, tmp_path / "config.yaml")
    assert read_saved_config(tmp_path / "config.yaml") == cfg


def test_base_preset_is_applied_first(tmp_path):
    (tmp_path / "shared.yaml").write_text("data:\n  size: 32x48\ntrain:\n  epochs: 9\n")
    (tmp_path / "exp_b.yaml").write_text("base: shared.yaml\ntrain:\n  epochs: 2\n")
    cfg = load_config(tmp_path / "exp_b.yaml")
    assert cfg.exp.name == "exp_b" and cfg.data.size == "32x48" and cfg.train.epochs == 2
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "loop.yaml")
