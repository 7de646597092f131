"""What a run says: its plan, an ETA, and one line per epoch in a log that is not a terminal
(no progress-bar redraws); a finished fold drops its resume state unless asked to keep it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, write_tiny_layout

from carvana_seg.cleanup import finished_states
from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout


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
