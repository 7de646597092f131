"""The whole chain on each data layout, on tiny generated data: make_synthetic --layout, folds,
training (configs/tiny.yaml's settings, 1 epoch), tuning, prediction and its validated
submission, read back in the layout's own conventions (header, id spelling, RLE format), and
the leaderboard.

The tgs case is a grey 16-bit folders set with 40% empty masks, column-major RLE and no groups.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from carvana_seg.config import load_config
from carvana_seg.data.layouts import open_layout
from carvana_seg.inference.check import check_submission

REPO = Path(__file__).resolve().parents[1]

# layout -> (preset, make_synthetic arguments, training size)
CASES = {
    "carvana": ("configs/layouts/carvana.yaml", ["--out", "input/synthetic", "--cars", "2", "--test-cars", "1", "--size", "96x64"], "32x48"),
    "folders": ("configs/layouts/folders.yaml", ["--layout", "folders", "--out", "input/synthetic_folders", "--cars", "2", "--test-cars", "1", "--size", "96x64"], "32x48"),
    "csv": ("configs/layouts/csv.yaml", ["--layout", "csv", "--out", "input/synthetic_csv", "--cars", "2", "--test-cars", "1", "--size", "96x64"], "32x48"),
    "tgs": ("configs/layouts/tgs.yaml", ["--layout", "tgs", "--out", "input/synthetic_tgs", "--images", "10", "--test-images", "4", "--size", "32x32", "--empty-share", "0.4"], "32x32"),
}


def tiny_overrides(size: str) -> list[str]:
    """configs/tiny.yaml's settings as overrides (a preset's own base stays), at `size`, 1 epoch."""
    tree = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    flat = [f"{section}.{key}={value}" for section, values in tree.items() for key, value in values.items()]
    return [*flat, f"data.size={size}", "train.epochs=1", "model.base_channels=4", "model.depth=3"]


def run(folder: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(CASES))
def test_the_chain_runs_on_each_layout(tmp_path, layout):
    preset, synthetic, size = CASES[layout]
    for name in ("scripts", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    overrides = tiny_overrides(size)
    run(tmp_path, "scripts/make_synthetic.py", *synthetic)
    folds_output = run(tmp_path, "scripts/make_folds.py", "--config", preset, *overrides)
    run(tmp_path, "scripts/train_cv.py", "--config", preset, *overrides, f"exp.name={layout}")
    run(tmp_path, "scripts/tune.py", "--exp", layout, "--tta", "hflip", "--name", "first")
    run(tmp_path, "scripts/predict.py", "--recipe", "submissions/first.recipe.json")

    root = tmp_path / load_config(REPO / preset).data.root
    data = open_layout(load_config(REPO / preset, [f"data.root={root}"]).data)
    submission = tmp_path / "submissions" / "first.csv"
    with open(submission, newline="") as handle:
        rows = list(csv.reader(handle))
    with open(data.sample_path, newline="") as handle:
        sample = list(csv.reader(handle))
    assert rows[0] == sample[0] and [r[0] for r in rows[1:]] == [r[0] for r in sample[1:]]  # header, spelling, order
    sizes = {name: data.photo_size(data.image_path(i, "test")) for name, i in zip(data.submission_names, data.test_ids)}
    assert check_submission(submission, data.sample_path, sizes.__getitem__, data.rle_format) == []
    for name, rle in rows[1:]:
        assert data.rle_format.decode(rle, sizes[name]).shape == sizes[name]
    saved = yaml.safe_load((tmp_path / "runs" / layout / "config.yaml").read_text())
    assert saved["model"]["in_channels"] == (1 if layout == "tgs" else 3)  # followed the data
    run(tmp_path, "scripts/leaderboard.py")
    board = (tmp_path / "leaderboard.md").read_text()
    assert ("dice_empty" in board) == (layout == "tgs")  # Dice on empty and non-empty masks apart, where some are empty
    if layout == "tgs":
        assert "each image is its own group" in folds_output
        # the one-channel network through an offline bundle and ONNX
        run(tmp_path, "scripts/export.py", "--recipe", "submissions/first.recipe.json", "--out", "bundles/first/", "--onnx")
        onnx = tmp_path / "onnx.csv"
        run(tmp_path, "scripts/predict.py", "--bundle", "bundles/first/", f"data.root={root}", "--backend", "onnxruntime", "--out", str(onnx))
        assert check_submission(onnx, data.sample_path, sizes.__getitem__, data.rle_format) == []
