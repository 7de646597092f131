"""K-fold training: a fold end to end, resume (never unpickling), loud failures. DDP and --parallel: test_cv_parallel.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_layout
from safetensors.numpy import load_file

from carvana_seg.config import ConfigError, load_config
from carvana_seg.store.oof import OOF
from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.models import load_checkpoint
from carvana_seg.training.trainer import NonFiniteLossError, train_fold

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = write_tiny_layout(tmp_path_factory.mktemp("train") / "data", cars=4, angles=4, hw=(48, 72))
    write_folds(make_folds(CarvanaLayout(root), 2, seed=0), root / "folds.csv")
    return root


def tiny_config(tmp_path: Path, data_root: Path, *overrides: str):
    return load_config(
        REPO / "configs" / "tiny.yaml",
        [f"data.root={data_root}", f"data.cache_dir={tmp_path / 'cache'}", f"exp.runs_dir={tmp_path / 'runs'}",
         f"exp.oof_dir={tmp_path / 'oof'}", *overrides],
    )


def test_one_epoch_fold_end_to_end(tmp_path, data_root):
    cfg = tiny_config(tmp_path, data_root, "train.epochs=1")
    scores = train_fold(cfg, fold=0)
    fold_dir = tmp_path / "runs" / "tiny" / "fold0"
    for name in ("model.safetensors", "metrics.csv", "learning_curve.png"):
        assert (fold_dir / name).is_file(), name
    assert not (fold_dir / "state").exists()  # a finished fold drops its resume state (train.keep_state=false)
    assert (tmp_path / "runs" / "tiny" / "config.yaml").is_file()
    oof = OOF.load(tmp_path / "oof" / "tiny" / "fold0.npz")
    folds = pd.read_csv(data_root / "folds.csv")
    assert sorted(oof.ids.tolist()) == sorted(folds.loc[folds.fold == 0, "img"])
    assert oof.probs.shape == (8, 64, 96) and oof.probs.dtype == np.uint8
    assert (oof.original_sizes == [48, 72]).all()
    written = json.loads((tmp_path / "oof" / "tiny" / "fold0.json").read_text())
    assert written == scores and 0 <= scores["dice"] <= 1 and scores["images"] == 8
    assert len(pd.read_csv(fold_dir / "metrics.csv")) == 1
    record = json.loads((fold_dir / "run.json").read_text())  # what produced the fold
    for key in ("torch", "cuda", "accelerate", "python", "device", "processes", "git_commit", "host", "started", "ended",
                "wall_seconds", "command"):
        assert key in record, key
    assert record["status"] == "finished" and record["processes"] == 1 and record["wall_seconds"] > 0
    assert json.loads((fold_dir / "progress.json").read_text())["status"] == "finished"


def test_resume_matches_uninterrupted_run(tmp_path, data_root):
    full = tiny_config(tmp_path, data_root, "exp.name=full", "train.keep_state=true")  # the final states are compared
    train_fold(full, fold=1)
    sliced = tiny_config(tmp_path, data_root, "exp.name=sliced", "train.keep_state=true")
    assert train_fold(sliced, fold=1, stop_after_epoch=1) == {}
    assert not (tmp_path / "oof" / "sliced" / "fold1.json").exists()
    train_fold(sliced, fold=1, resume=True)

    def final_weights(exp):
        return load_file(tmp_path / "runs" / exp / "fold1" / "state" / "epoch0002" / "model.safetensors")

    a, b = final_weights("full"), final_weights("sliced")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    metrics = [pd.read_csv(tmp_path / "runs" / e / "fold1" / "metrics.csv") for e in ("full", "sliced")]
    assert len(metrics[1]) == 2
    np.testing.assert_allclose(metrics[0][["train_loss", "val_dice"]], metrics[1][["train_loss", "val_dice"]], rtol=1e-5)


def test_ema_tensorboard_and_early_stopping(tmp_path, data_root):
    cfg = tiny_config(tmp_path, data_root, "train.epochs=4", "train.lr=0", "train.early_stop=1", "train.keep=best", "train.ema=0.9",
                      "train.trackers=csv,tensorboard")
    scores = train_fold(cfg, fold=0)
    fold_dir = tmp_path / "runs" / "tiny" / "fold0"
    assert len(pd.read_csv(fold_dir / "metrics.csv")) == 2  # lr 0: no improvement after epoch 1, stop after 2
    assert scores["epochs"] == 2 and scores["best_epoch"] == 1
    assert list(fold_dir.rglob("events.out.tfevents.*")), "no TensorBoard event file"


def test_keep_last_or_best_and_validate_every_n_epochs(tmp_path, data_root):
    # lr 0: every epoch scores the same, so `best` keeps the first validated epoch, `last` the last.
    last = train_fold(tiny_config(tmp_path, data_root, "exp.name=last", "train.epochs=3", "train.lr=0", "train.val_every=2"), fold=0)
    assert last["kept_epoch"] == 3 and last["best_epoch"] == 2 and last["epochs"] == 3
    metrics = pd.read_csv(tmp_path / "runs" / "last" / "fold0" / "metrics.csv")
    assert metrics["val_dice"].isna().tolist() == [True, False, False]  # epoch 2 by val_every, 3 as the last
    best = train_fold(tiny_config(tmp_path, data_root, "exp.name=best", "train.epochs=3", "train.lr=0", "train.keep=best"), fold=0)
    assert best["kept_epoch"] == 1 and best["dice_train_res"] == best["best_dice_train_res"]
    assert (tmp_path / "runs" / "best" / "fold0" / "learning_curve.png").is_file()


def test_compiled_training_matches_eager_and_saves_plain_weights(tmp_path, data_root):
    # train.compile wraps the model in torch.compile: same numbers up to fused-kernel rounding,
    # and the checkpoint must load strictly into an uncompiled model (no `_orig_mod.` keys).
    eager = train_fold(tiny_config(tmp_path, data_root, "exp.name=eager", "train.epochs=1"), fold=0)
    compiled = train_fold(tiny_config(tmp_path, data_root, "exp.name=compiled", "train.epochs=1", "train.compile=true"), fold=0)
    assert compiled["dice_train_res"] == pytest.approx(eager["dice_train_res"], abs=1e-3)
    probs = [OOF.load(tmp_path / "oof" / exp / "fold0.npz").probs.astype(int) for exp in ("eager", "compiled")]
    assert np.abs(probs[0] - probs[1]).max() <= 2  # uint8 probability levels
    weights = tmp_path / "runs" / "compiled" / "fold0" / "model.safetensors"
    assert not [key for key in load_file(weights) if "_orig_mod" in key]
    _, cfg = load_checkpoint(weights)  # strict: every key must match the plain model
    assert cfg.train.compile


def test_soft_masks_change_the_training_targets_not_the_validation_truth(tmp_path, data_root):
    # lr 0: both runs keep their initial weights, so only the targets differ: the training
    # loss must (soft targets reach the loss), the validation Dice must not (scored on 0/1 truth).
    runs = [train_fold(tiny_config(tmp_path, data_root, f"exp.name={name}", "train.epochs=1", "train.lr=0", *extra), fold=0)
            for name, extra in (("hard", ()), ("soft", ("data.soft_masks=true",)))]
    losses = [pd.read_csv(tmp_path / "runs" / name / "fold0" / "metrics.csv")["train_loss"].item() for name in ("hard", "soft")]
    assert abs(losses[0] - losses[1]) > 1e-4, losses
    assert runs[0]["dice_train_res"] == runs[1]["dice_train_res"] and runs[0]["dice"] == runs[1]["dice"]


@pytest.mark.parametrize("overrides, message", [
    (["train.keep=first"], r"train.keep: 'first' is not one of last, best"),
    (["train.val_every=0"], r"train.val_every: must be >= 1"),
    (["train.early_stop=2"], r"train.early_stop needs train.keep=best"),
    (["data.soft_masks=true", "train.loss=lovasz"], r"data.soft_masks needs a loss that takes soft targets \(bce_dice, bce\), not 'lovasz'"),
])
def test_conflicting_settings_fail_before_training(tmp_path, data_root, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train_fold(tiny_config(tmp_path, data_root, *overrides), fold=0)
    assert not (tmp_path / "runs").exists()


def test_unknown_tracker_is_a_config_error(tmp_path, data_root):
    with pytest.raises(ConfigError, match="train.trackers.*comet"):
        train_fold(tiny_config(tmp_path, data_root, "train.trackers=csv,comet"), fold=0)


def test_non_finite_loss_stops_with_the_step(tmp_path, data_root):
    cfg = tiny_config(tmp_path, data_root, "train.lr=1e30", "train.grad_clip=0", "train.warmup_epochs=0")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at epoch 1, step \d+"):
        train_fold(cfg, fold=0)


def test_changed_config_under_same_name_is_refused(tmp_path, data_root):
    train_fold(tiny_config(tmp_path, data_root, "train.epochs=1"), fold=0)
    with pytest.raises(ConfigError, match=r"train.lr: 0.003 -> 0.01"):
        train_fold(tiny_config(tmp_path, data_root, "train.epochs=1", "train.lr=0.01"), fold=1)


def test_cli_config_error_names_the_key(tmp_path, data_root):
    result = subprocess.run(
        [sys.executable, "scripts/train_fold.py", "--config", "configs/tiny.yaml", "--fold", "0", "train.epochz=1"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 2 and "train.epochz" in result.stderr and "Traceback" not in result.stderr


class _Payload:
    """Unpickling this creates `marker`: the code a planted state file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_unpickles_a_planted_state_file(tmp_path, data_root):
    """Registered with accelerate, the EMA would be loaded from state/epoch<N>/custom_checkpoint_0.pkl
    with the weights-only check off. It is saved as ema.safetensors instead; a planted pickle is never read, and
    the resumed run still matches an uninterrupted one (so the EMA really was restored)."""
    import pickle

    full = train_fold(tiny_config(tmp_path, data_root, "exp.name=full", "train.ema=0.5", "data.size=32x48"), fold=0)
    sliced = tiny_config(tmp_path, data_root, "exp.name=sliced", "train.ema=0.5", "data.size=32x48")
    assert train_fold(sliced, fold=0, stop_after_epoch=1) == {}
    state = tmp_path / "runs" / "sliced" / "fold0" / "state" / "epoch0001"
    assert (state / "ema.safetensors").is_file() and not list(state.glob("custom_checkpoint_*"))
    marker, planted = tmp_path / "payload-ran", state / "custom_checkpoint_0.pkl"
    planted.write_bytes(pickle.dumps(_Payload(marker)))
    pickle.loads(planted.read_bytes())  # control: the payload runs when the file is unpickled
    assert marker.is_file()
    marker.unlink()

    from carvana_seg.errors import PipelineError

    with pytest.raises(PipelineError, match=r"custom_checkpoint_0.pkl: this project never writes custom checkpoints"):
        train_fold(sliced, fold=0, resume=True)
    assert not marker.exists(), "resume unpickled the planted file"
    planted.unlink()
    resumed = train_fold(sliced, fold=0, resume=True)
    assert resumed["dice_train_res"] == pytest.approx(full["dice_train_res"], abs=1e-6)
    a, b = (load_file(tmp_path / "runs" / exp / "fold0" / "model.safetensors") for exp in ("full", "sliced"))  # EMA weights
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_no_code_loads_pickles():
    """Nothing in src/ or scripts/ turns off torch's weights-only loading, allows numpy pickles,
    imports pickle or registers objects for accelerate's pickled checkpointing."""
    banned = ("weights_only=False", "allow_pickle=True", "import pickle", "register_for_checkpointing(")
    found = [f"{path}: {word}" for path in [*REPO.glob("src/**/*.py"), *REPO.glob("scripts/*.py")]
             for word in banned if word in path.read_text()]
    assert not found, found


@pytest.mark.parametrize("overrides, fold, message", [
    (["data.root={missing}"], 0, r"does not exist"),
    ([], 9, r"--fold 9: must be in 0..1"),
])
def test_failed_first_check_claims_no_experiment(tmp_path, data_root, overrides, fold, message):
    """A run refused on its inputs saves no runs/<exp>/config.yaml and makes no
    fold folder, so the corrected rerun under the same name is not called a different config."""
    from carvana_seg.errors import PipelineError
    from carvana_seg.training.cv import train_experiments

    cfg = tiny_config(tmp_path, data_root, *(item.format(missing=tmp_path / "missing") for item in overrides))
    with pytest.raises(PipelineError, match=message):
        train_fold(cfg, fold=fold)
    with pytest.raises(PipelineError, match=message):
        train_experiments([cfg], folds=[fold])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "oof").exists()
