"""store/paths.py names every file of an experiment; the names on disk are those earlier runs
wrote, so existing runs/ and oof/ folders keep working."""

from __future__ import annotations

from pathlib import Path

from carvana_seg.config import load_config
from carvana_seg.store.paths import ExperimentPaths

REPO = Path(__file__).resolve().parents[1]


def test_every_file_of_an_experiment_keeps_its_name(tmp_path):
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"exp.runs_dir={tmp_path / 'runs'}", f"exp.oof_dir={tmp_path / 'oof'}", "exp.name=e"])
    paths = ExperimentPaths.of(cfg)
    run, oof = tmp_path / "runs" / "e", tmp_path / "oof" / "e"
    assert paths.config == run / "config.yaml"
    assert paths.weights(1) == run / "fold1" / "model.safetensors"
    assert paths.onnx(1) == run / "fold1" / "model.onnx"
    assert paths.metrics_csv(0) == run / "fold0" / "metrics.csv"
    assert paths.learning_curve(0) == run / "fold0" / "learning_curve.png"
    assert paths.train_log(2) == run / "fold2" / "train.log"
    assert paths.state_dir(0) == run / "fold0" / "state"
    assert paths.fold_lock(0) == run / "fold0" / ".lock"
    assert paths.run_json(1) == run / "fold1" / "run.json" and paths.progress_json(1) == run / "fold1" / "progress.json"
    assert paths.oof_npz(3) == oof / "fold3.npz" and paths.oof_json(3) == oof / "fold3.json"
    assert paths.tta_oof_npz(0, "hflip+scale1.25") == oof / "fold0.tta-hflip+scale1.25.npz"
    assert paths.histograms_npz("none") == oof / "hist.none.npz"
    assert paths.worst_png == oof / "worst.png"


def test_a_members_run_folder_is_named_before_its_config_is_read(tmp_path):
    paths = ExperimentPaths.runs_of(tmp_path / "bundle" / "runs", "e")
    assert paths.config == tmp_path / "bundle" / "runs" / "e" / "config.yaml"
    assert paths.weights(0) == tmp_path / "bundle" / "runs" / "e" / "fold0" / "model.safetensors"
    assert paths.oof_dir is None


def test_the_progress_writer_writes_where_the_store_says(tmp_path):
    from carvana_seg.training.progress import read_progress, write_progress

    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"exp.runs_dir={tmp_path / 'runs'}", f"exp.oof_dir={tmp_path / 'oof'}", "exp.name=e"])
    paths = ExperimentPaths.of(cfg)
    paths.fold_dir(0).mkdir(parents=True)
    write_progress(paths.fold_dir(0), epoch=2)
    assert paths.progress_json(0).is_file() and read_progress(paths.fold_dir(0))["epoch"] == 2
