"""A new user's first hour: a run says what it will do and how long it takes, a log
outside a terminal gets a line per epoch (no progress-bar redraws), finished folds drop their
resume state unless asked, and experiments can be removed by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_layout

from carvana_seg.cleanup import experiment_folders, finished_states, remove
from carvana_seg.config import load_config
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_logged_run_prints_its_plan_an_eta_and_one_line_per_epoch(tmp_path):
    root = write_tiny_layout(tmp_path / "data", cars=4, angles=4, hw=(48, 72))
    write_folds(make_folds(CarvanaLayout(root), 2, seed=0), root / "folds.csv")
    common = [f"data.root={root}", "data.size=32x48", "train.batch_size=2", f"data.cache_dir={tmp_path / 'cache'}",
              f"exp.runs_dir={tmp_path / 'runs'}", f"exp.oof_dir={tmp_path / 'oof'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # stdout and stderr are pipes, not a terminal: what `make demo > demo.log 2>&1` sees
    done = subprocess.run([sys.executable, "scripts/train_fold.py", "--config", "configs/tiny.yaml", "--fold", "0", "train.epochs=3", *common],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "\r" not in log, "a progress bar redrew itself in a log"
    lines = log.splitlines()
    plan = [line for line in lines if line.startswith("plan: tiny fold 0: ")]
    assert len(plan) == 1 and all(word in plan[0] for word in ("U-Net plain b8 d3", "M parameters", "at 32x48", "3 epochs of 8 images", "on cpu"))
    assert sum(line.startswith("ETA: ") for line in lines) == 1
    assert sum(line.startswith("epoch ") for line in lines) == 3
    said = [line for line in lines if not line.startswith("override: ")]
    assert len(said) == 6, "\n".join(said)  # plan, ETA, 3 epoch lines, the fold's result
    assert not (tmp_path / "runs" / "tiny" / "fold0" / "state").exists()  # finished: resume state dropped

    kept = subprocess.run([sys.executable, "scripts/train_fold.py", "--config", "configs/tiny.yaml", "--fold", "1", "train.epochs=1",
                           "exp.name=kept", "train.keep_state=true", *common], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert (tmp_path / "runs" / "kept" / "fold1" / "state" / "latest.json").is_file()
    assert finished_states(tmp_path / "runs") == [tmp_path / "runs" / "kept" / "fold1" / "state"]


def claimed(tmp_path: Path, name: str) -> ExperimentPaths:
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"exp.name={name}", f"exp.runs_dir={tmp_path / 'runs'}", f"exp.oof_dir={tmp_path / 'oof'}"])
    paths = ExperimentPaths.of(cfg)
    paths.claim(cfg)
    for fold in (0, 1):
        paths.state_dir(fold).mkdir(parents=True)
        (paths.state_dir(fold) / "latest.json").write_text("{}")
    paths.oof_dir.mkdir(parents=True)
    paths.oof_json(0).write_text("{}")  # fold 0 finished, fold 1 still resumable
    return paths


def test_clean_removes_one_experiment_and_only_finished_states(tmp_path):
    keep, drop = claimed(tmp_path, "keep"), claimed(tmp_path, "drop")
    assert experiment_folders("drop", tmp_path / "runs", tmp_path / "oof") == [drop.run_dir, drop.oof_dir]
    assert finished_states(tmp_path / "runs") == [drop.state_dir(0), keep.state_dir(0)]
    assert remove(experiment_folders("drop", tmp_path / "runs", tmp_path / "oof")) > 0
    assert not drop.run_dir.exists() and not drop.oof_dir.exists() and keep.config.is_file()
    remove(finished_states(tmp_path / "runs"))
    assert not keep.state_dir(0).exists() and keep.state_dir(1).is_dir()  # an unfinished fold keeps what --resume needs


@pytest.mark.parametrize("name", ["../keep", "/tmp", "..", "a b"])
def test_clean_refuses_names_that_are_not_plain(tmp_path, name):
    keep = claimed(tmp_path, "keep")
    with pytest.raises(PipelineError, match="not a plain name|expected a non-empty name"):
        experiment_folders(name, tmp_path / "runs")
    assert keep.config.is_file()


def test_clean_script_refuses_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "scripts/clean.py", "--exp", "../x"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error: --exp: '../x' is not a plain name") and "Traceback" not in done.stderr
