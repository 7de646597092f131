"""Config: presets, strict overrides, saved and reloaded unchanged."""

from __future__ import annotations

import pytest

from carvana_seg import config as config_module
from carvana_seg.commands.cli import parse_config_args
from carvana_seg.config import CHOICES, ConfigError, load_config, read_saved_config, save_config


def test_defaults_preset_and_overrides(tmp_path):
    preset = tmp_path / "exp_a.yaml"
    preset.write_text("model:\n  block: se\ntrain:\n  epochs: 7\n")
    cfg = load_config(preset, ["train.lr=0.01", "data.size=64x96", "model.encoder_weights=null", "train.epochs=3"])
    assert cfg.exp.name == "exp_a"  # the file's stem
    assert cfg.model.block == "se" and cfg.train.epochs == 3 and cfg.train.lr == 0.01
    assert cfg.data.size == (64, 96) and not hasattr(cfg.model, "encoder_weights")  # an smp setting at its default: accepted, not kept


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
    assert cfg.exp.name == "exp_b" and cfg.data.size == (32, 48) and cfg.train.epochs == 2
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "loop.yaml")


@pytest.mark.parametrize("name", ["../../tmp/escape", "/tmp/abs", "a/b", ".", "..", "has space", "tab\there", "é"])
def test_experiment_name_must_be_plain(name):
    with pytest.raises(ConfigError, match=r"exp\.name: .* is not a plain name"):
        load_config(None, [f"exp.name={name}"])


def test_name_from_preset_and_file_stem_are_checked(tmp_path):
    preset = tmp_path / "ok.yaml"
    preset.write_text("exp:\n  name: ../outside\n")
    with pytest.raises(ConfigError, match=r"ok\.yaml: exp\.name: '\.\./outside'"):
        load_config(preset)
    spaced = tmp_path / "my exp.yaml"
    spaced.write_text("train:\n  epochs: 1\n")
    with pytest.raises(ConfigError, match=r"my exp\.yaml: an experiment is named after its config file"):
        load_config(spaced)
    assert load_config(spaced, ["exp.name=my_exp"]).exp.name == "my_exp"


def test_script_refuses_an_escaping_name_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_config_args(None, argv=["exp.name=../../tmp/escape"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("config error: exp.name:"), err


def test_text_fields_take_the_word_as_typed(tmp_path):
    cfg = load_config(None, ["train.precision=no", "train.trackers=off", "exp.name=yes", "data.use_cache=no", "train.compile=yes"])
    assert (cfg.train.precision, cfg.train.trackers, cfg.exp.name) == ("no", "off", "yes")
    assert cfg.data.use_cache is False and cfg.train.compile is True  # booleans still read yes/no
    preset = tmp_path / "words.yaml"
    preset.write_text("exp:\n  name: on\ntrain:\n  precision: no\n  trackers: yes\ndata:\n  augment: off\n  size: 32x48\n")
    cfg = load_config(preset)
    assert (cfg.exp.name, cfg.train.precision, cfg.train.trackers, cfg.data.augment) == ("on", "no", "yes", False)
    save_config(cfg, tmp_path / "saved.yaml")
    assert read_saved_config(tmp_path / "saved.yaml") == cfg


def test_numbers_and_nulls_still_convert():
    cfg = load_config(None, ["train.lr=3e-4", "train.epochs=+3", "model.dropout=0.1"])
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 3 and cfg.model.dropout == 0.1
    assert load_config(None, ["model.name=smp", "model.encoder_weights=imagenet"]).model.encoder_weights == "imagenet"
    assert load_config(None, ["model.name=smp", "model.encoder_weights=null"]).model.encoder_weights is None
    for bad in ("train.epochs=3.0", "data.use_cache=1", "model.dropout=yes"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config(None, [bad])


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_choice_fields_are_checked_on_load_and_list_the_choices(key):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"{key}=nonsense"])
    message = str(caught.value)
    assert message.startswith(f"{key}: 'nonsense' is not one of")
    assert all(choice in message for choice in CHOICES[key])


@pytest.mark.parametrize(
    "override",
    ["train.epochs=0", "train.batch_size=0", "train.lr=-0.1", "train.lr=nan", "train.lr=inf",
     "data.folds=1", "data.num_workers=-1", "train.grad_accum=0", "train.ema=1", "model.dropout=1",
     "train.val_every=0", "model.depth=0", "model.base_channels=0", "data.darken_floor=1.5", "train.weight_decay=-1",
     "train.seed=-1", "data.fold_seed=4294967296"],
)
def test_impossible_numbers_are_config_errors(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"^{key.replace('.', r'[.]')}: must be"):
        load_config(None, [override])


def test_bad_choice_in_a_preset_names_the_file_and_scripts_exit_2(tmp_path, capsys):
    preset = tmp_path / "bad_loss.yaml"
    preset.write_text("train:\n  loss: dice\n")
    with pytest.raises(ConfigError, match=r"bad_loss\.yaml: train\.loss: 'dice' is not one of"):
        load_config(preset)
    with pytest.raises(SystemExit) as exit_:
        parse_config_args(None, argv=["train.batch_size=0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err == "config error: train.batch_size: must be >= 1, got 0\n"


def test_choice_lists_are_the_ones_the_code_uses():
    from accelerate.utils import PrecisionType

    from carvana_seg.models import available_models
    from carvana_seg.models.blocks import BLOCK_KINDS
    from carvana_seg.models.unet import UPSAMPLE_MODES
    from carvana_seg.training import trainer
    from carvana_seg.training.losses import LOSSES

    assert tuple(LOSSES) == config_module.LOSS_CHOICES
    assert tuple(BLOCK_KINDS) == config_module.BLOCK_CHOICES
    assert sorted(available_models()) == sorted(config_module.MODEL_CHOICES)
    assert tuple(config_module.MODEL_FAMILIES) == config_module.MODEL_CHOICES
    assert UPSAMPLE_MODES is config_module.UPSAMPLE_CHOICES and set(config_module.SOFT_TARGET_LOSSES) <= set(LOSSES)
    assert set(config_module.PRECISION_CHOICES) <= {p.value for p in PrecisionType}
    for schedule in config_module.SCHEDULE_CHOICES:
        assert trainer.lr_factor(5, 10, 2, schedule) > 0
