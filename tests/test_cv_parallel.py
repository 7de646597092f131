"""Several folds at a time: DDP over every fold in one process group, and `train_cv.py --parallel`.

Each test launches real processes on tiny data (32x48, one epoch); the children's start-up
(importing torch) is most of their time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_layout

from carvana_seg.store.oof import OOF
from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout

REPO = Path(__file__).resolve().parents[1]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
RUN_KEYS = {"torch", "cuda", "accelerate", "python", "device", "processes", "git_commit", "host", "started", "ended",
            "wall_seconds", "command", "status"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = write_tiny_layout(tmp_path_factory.mktemp("cv") / "data", cars=4, angles=4, hw=(48, 72))
    write_folds(make_folds(CarvanaLayout(root), 2, seed=0), root / "folds.csv")
    return root


def cv_args(work: Path, data_root: Path, name: str) -> list[str]:
    return ["--config", "configs/tiny.yaml", f"data.root={data_root}", "data.size=32x48", "train.epochs=1", "train.batch_size=3",
            f"data.cache_dir={work / 'cache'}", f"exp.runs_dir={work / 'runs'}", f"exp.oof_dir={work / 'oof'}", f"exp.name={name}"]


def summary_rows(stdout: str, name: str) -> list[str]:
    """The summary table's rows for experiment `name` (`<name> <mean> <std> <count>`)."""
    return [line for line in stdout.splitlines() if line.split()[:1] == [name] and len(line.split()) == 4]


@pytest.mark.slow
def test_ddp_two_processes_train_every_fold_once(tmp_path, data_root):
    """2 processes (gloo on CPU) x 2 folds in one process group: every validation image exactly
    once in each fold's OOF, and one summary, printed by the main process."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    done = subprocess.run([torchrun, "--nproc_per_node", "2", "scripts/train_cv.py", *cv_args(tmp_path, data_root, "ddp")],
                          cwd=REPO, env=ONE_THREAD, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    folds = pd.read_csv(data_root / "folds.csv")
    for fold in (0, 1):
        oof = OOF.load(tmp_path / "oof" / "ddp" / f"fold{fold}.npz")
        assert sorted(oof.ids.tolist()) == sorted(folds.loc[folds.fold == fold, "img"])  # each once: 8 over 2 ranks x batch 3
        assert json.loads((tmp_path / "oof" / "ddp" / f"fold{fold}.json").read_text())["processes"] == 2
        record = json.loads((tmp_path / "runs" / "ddp" / f"fold{fold}" / "run.json").read_text())
        assert record["processes"] == 2 and record["status"] == "finished"
    assert len(summary_rows(done.stdout, "ddp")) == 1, done.stdout


@pytest.mark.slow
def test_parallel_matches_sequential_names_a_failed_fold_and_resumes(tmp_path, data_root):
    """`--parallel 2` writes the same OOF bytes as the sequential loop; a fold that fails is
    named with its log and the command exits non-zero; the rerun trains only that fold."""
    sequential = subprocess.run([sys.executable, "scripts/train_cv.py", *cv_args(tmp_path, data_root, "seq")],
                                cwd=REPO, env=ONE_THREAD, capture_output=True, text=True, timeout=600, check=False)
    assert sequential.returncode == 0, sequential.stderr[-3000:]

    # fold 1 cannot save its state (a file where its state folder goes): it fails after epoch 1
    blocker = tmp_path / "runs" / "par" / "fold1" / "state"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    parallel = [sys.executable, "scripts/train_cv.py", "--parallel", "2", *cv_args(tmp_path, data_root, "par")]
    failed = subprocess.run(parallel, cwd=REPO, env=ONE_THREAD, capture_output=True, text=True, timeout=600, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    log = tmp_path / "runs" / "par" / "fold1" / "train.log"
    assert f"par fold 1 (exit 1, log {log}" in failed.stderr and "par fold 0" not in failed.stderr
    assert "Traceback" not in failed.stderr and "Traceback" in log.read_text()
    assert (tmp_path / "oof" / "par" / "fold0.json").is_file() and not (tmp_path / "oof" / "par" / "fold1.json").exists()
    assert "par fold 0: epoch 1/1" in failed.stdout  # a status line from progress.json

    blocker.unlink()
    rerun = subprocess.run(parallel, cwd=REPO, env=ONE_THREAD, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "par fold 0: finished earlier" in rerun.stdout and "training 1 fold(s) on a local Ray runtime" in rerun.stdout
    assert len(summary_rows(rerun.stdout, "par")) == 1

    for fold in (0, 1):
        seq, par = (OOF.load(tmp_path / "oof" / exp / f"fold{fold}.npz") for exp in ("seq", "par"))
        assert seq.ids.tolist() == par.ids.tolist()
        np.testing.assert_array_equal(seq.probs, par.probs)  # byte-equal uint8 levels
        record = json.loads((tmp_path / "runs" / "par" / f"fold{fold}" / "run.json").read_text())
        assert RUN_KEYS <= record.keys() and record["processes"] == 1 and record["torch_threads"] == 1
        assert "carvana_seg.commands.train_fold" in " ".join(record["command"]) or "train_fold.py" in " ".join(record["command"])
    failed_session = json.loads((tmp_path / "runs" / "par" / "fold1" / "run.json").read_text())["previous"][-1]
    assert failed_session["status"] == "failed" and "NotADirectoryError" in failed_session["error"]


def test_parallel_refuses_bad_input_before_starting_anything(tmp_path, data_root):
    """A missing data root is a one-line error from the parent; nothing is claimed or started."""
    args = cv_args(tmp_path, data_root, "bad") + [f"data.root={tmp_path / 'missing'}"]
    done = subprocess.run([sys.executable, "scripts/train_cv.py", "--parallel", "2", *args],
                          cwd=REPO, env=ONE_THREAD, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1 and "missing" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_run_record_outside_git_has_no_commit(tmp_path):
    """run.json must not fail where the code is not a git checkout (an installed wheel, say)."""
    from carvana_seg.training.runinfo import git_commit

    assert git_commit(tmp_path) == {"git_commit": None, "git_dirty": None}
    assert git_commit()["git_commit"] is None or len(git_commit()["git_commit"]) == 40
