"""`scripts/ablate.py`: a grid of variants of one config, trained as Ray tasks, tuned each and ranked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_tiny_layout

from carvana_seg.commands.ablate import main, parse_grid, variant_name
from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def test_names_come_from_the_values_and_stay_plain():
    axes = parse_grid(["model.block=plain,se", "train.lr=1e-3,2e-3"])
    assert axes == [("model.block", ["plain", "se"]), ("train.lr", ["1e-3", "2e-3"])]
    assert variant_name("tiny", axes, ("se", "2e-3")) == "tiny_block-se_lr-2e-3"
    same_last = [("data.size", ["64x96"]), ("model.size", ["a b"])]
    assert variant_name("tiny", same_last, ("64x96", "a b")) == "tiny_data.size-64x96_model.size-a-b"


@pytest.mark.parametrize("grid, says", [
    (["model.block"], "expected KEY=V1,V2"),
    (["model.block=plain,,se"], "expected KEY=V1,V2"),
    (["train.lr=1e-3", "train.lr=2e-3"], "already an axis"),
    (["exp.name=a,b"], "the experiment's name"),
])
def test_a_bad_grid_is_one_line(grid, says, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ablate.py", "--config", str(REPO / "configs" / "tiny.yaml"), *(f"--grid={g}" for g in grid)])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and says in err and len([line for line in err.splitlines() if "config error" in line]) == 1, err


@pytest.mark.slow
def test_a_grid_ends_in_a_leaderboard_and_a_rerun_skips_what_is_done(tmp_path):
    root = write_tiny_layout(tmp_path / "data", cars=4, angles=4, hw=(48, 72))
    write_folds(make_folds(CarvanaLayout(root), 2, seed=0), root / "folds.csv")
    out = tmp_path / "ablation"
    command = [sys.executable, "scripts/ablate.py", "--config", "configs/tiny.yaml", "--grid", "model.block=plain,se", "--parallel", "2",
               "--out-dir", str(out), f"data.root={root}", "data.size=32x48", "train.epochs=1", "train.batch_size=3",
               f"data.cache_dir={tmp_path / 'cache'}", f"exp.runs_dir={tmp_path / 'runs'}", f"exp.oof_dir={tmp_path / 'oof'}"]
    first = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    names = ["tiny_block-plain", "tiny_block-se"]
    assert f"2 experiments: {', '.join(names)}" in first.stdout and "training 4 fold(s) on a local Ray runtime" in first.stdout
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(names) <= set(board["experiment"]) and (out / "leaderboard.md").is_file()
    for name in names:
        assert (out / f"{name}.recipe.json").is_file() and (tmp_path / "oof" / name / "fold1.json").is_file()

    again = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert sum("finished earlier" in line for line in again.stdout.splitlines()) == 4 and "Ray runtime" not in again.stdout
    assert sum("tuned earlier" in line for line in again.stdout.splitlines()) == 2
