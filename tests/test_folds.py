"""Folds: grouped by car, stratified where possible, stable, and never silently replaced."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, assert_one_line_error, run_script

from carvana_seg.data.folds import FoldsError, incomplete_cars, make_folds, read_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout


def test_no_car_crosses_folds_on_real_data(real_carvana):
    folds = make_folds(CarvanaLayout(real_carvana), n_folds=4, seed=42)
    assert len(folds) == 768
    assert (folds.groupby("car")["fold"].nunique() == 1).all()
    assert sorted(folds.groupby("fold")["car"].nunique().tolist()) == [12, 12, 12, 12]


def test_seeded_and_stable(tiny_layout):
    layout = CarvanaLayout(tiny_layout)
    a, b = make_folds(layout, 2, seed=3), make_folds(layout, 2, seed=3)
    assert a.equals(b)
    assert (a.groupby("car")["fold"].nunique() == 1).all()


def test_refuses_to_replace_a_different_split(tiny_layout, tmp_path):
    layout = CarvanaLayout(tiny_layout)
    path = tmp_path / "folds.csv"
    folds = make_folds(layout, 2, seed=0)
    assert write_folds(folds, path) is True
    assert write_folds(folds, path) is False  # identical: left alone
    other = folds.assign(fold=1 - folds["fold"])
    with pytest.raises(FoldsError, match="--force"):
        write_folds(other, path)
    assert pd.read_csv(path).equals(folds)
    assert write_folds(other, path, force=True) is True
    assert read_folds(path, layout, 2)["fold"].tolist() == other["fold"].tolist()


def test_read_folds_checks_coverage(tiny_layout, tmp_path):
    layout = CarvanaLayout(tiny_layout)
    path = tmp_path / "folds.csv"
    make_folds(layout, 2, seed=0).iloc[1:].to_csv(path, index=False)
    with pytest.raises(FoldsError, match="missing \\['car000_01'\\]"):
        read_folds(path, layout, 2)
    with pytest.raises(FoldsError, match="config asks for 3"):
        make_folds(layout, 2, seed=0).to_csv(path, index=False)
        read_folds(path, layout, 3)


def test_make_folds_script(tiny_layout):
    cmd = [sys.executable, "scripts/make_folds.py", f"data.root={tiny_layout}", "data.folds=2"]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "wrote" in first.stdout and (tiny_layout / "folds.csv").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "unchanged" in again.stdout
    changed = subprocess.run(cmd[:-1] + ["data.folds=3"], capture_output=True, text=True)
    assert changed.returncode != 0 and "\nerror: " in changed.stderr and "--force" in changed.stderr and "Traceback" not in changed.stderr


def test_read_only_data_folder_is_refused_with_the_fix(tiny_layout):
    folds = make_folds(CarvanaLayout(tiny_layout), 2, seed=0)
    tiny_layout.chmod(0o555)
    try:
        with pytest.raises(FoldsError, match="read-only.*data.folds_file"):
            write_folds(folds, tiny_layout / "folds.csv")
    finally:
        tiny_layout.chmod(0o755)


def test_a_fold_count_mismatch_names_the_fix_and_the_fix_works(tiny_layout, tmp_path):
    """The quick start's 4-fold folds.csv, then a 2-fold preset: refused in one line naming
    `data.folds=4` (or another folds file), with nothing written; the named override trains."""
    folds_file = tiny_layout / "folds.csv"
    write_folds(make_folds(CarvanaLayout(tiny_layout), 4, seed=0), folds_file)
    before = folds_file.read_bytes()
    cmd = [sys.executable, "scripts/train_fold.py", "--config", "configs/tiny.yaml", "--fold", "1", f"data.root={tiny_layout}",
           f"exp.runs_dir={tmp_path / 'runs'}", f"exp.oof_dir={tmp_path / 'oof'}", f"data.cache_dir={tmp_path / 'cache'}", "data.size=32x48", "train.epochs=1"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and errors == [
        f"error: {folds_file} has folds [0, 1, 2, 3], config asks for 2: pass data.folds=4 to use this file, "
        "or data.folds_file=<another file> for a 2-fold split (scripts/make_folds.py writes it)"
    ]
    assert not (tmp_path / "runs").exists() and folds_file.read_bytes() == before
    fixed = subprocess.run([*cmd, "data.folds=4"], capture_output=True, text=True, timeout=300)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert (tmp_path / "oof" / "tiny" / "fold1.npz").is_file()


def test_make_folds_script_reports_a_non_integer_token_in_one_line(tiny_layout):
    table = pd.read_csv(tiny_layout / "train_masks.csv")
    table.loc[0, "rle_mask"] = "12 3 abc 4"
    table.to_csv(tiny_layout / "train_masks.csv", index=False)
    result = subprocess.run([sys.executable, "scripts/make_folds.py", f"data.root={tiny_layout}", "data.folds=2"],
                            capture_output=True, text=True, cwd=REPO)
    assert_one_line_error(result.returncode, result.stderr, 1, "train_masks.csv: row car000_01.jpg", "'abc'")
    assert not (tiny_layout / "folds.csv").exists()


def test_make_folds_warns_about_cars_with_missing_photos(tiny_layout, monkeypatch, capsys):
    assert incomplete_cars(["a_01", "a_02", "b_01"]) == {"a": 2, "b": 1}
    assert incomplete_cars([f"c_{i:02d}" for i in range(1, 17)]) == {}
    code, err = run_script("make_folds.py", [f"data.root={tiny_layout}", "data.folds=2"], monkeypatch, capsys)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 4 and "warning: car car000 has 3 of 16 photos" in warnings[0], err
