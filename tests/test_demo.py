"""The demo's handling of outside data: generated files go under input/, never into the data folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.config import load_config
from carvana_seg.commands.demo import generated_files_overrides, staged_test_set
from carvana_seg.io_utils import writable


def test_read_only_folder_is_not_writable_even_for_root(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    assert writable(folder)
    folder.chmod(0o555)
    try:
        assert not writable(folder)
    finally:
        folder.chmod(0o755)


def test_train_images_staged_as_a_test_set(tiny_layout, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stage = staged_test_set(tiny_layout)
    layout = CarvanaLayout(stage)
    assert layout.test_ids == CarvanaLayout(tiny_layout).train_ids
    assert all(layout.image_path(i, "test").resolve() == (tiny_layout / "train" / f"{i}.jpg").resolve() for i in layout.test_ids)
    assert (pd.read_csv(stage / "sample_submission.csv")["rle_mask"] == "1 1").all()
    assert not (tiny_layout / "test" / "car000_01.jpg").exists()  # the data folder itself is untouched


def test_folds_of_outside_data_go_under_input_not_into_the_data_folder(tiny_layout, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outside = load_config(None, [f"data.root={tiny_layout}", *generated_files_overrides(tiny_layout)])
    assert outside.data.folds_path == Path("input/folds/tiny.csv")  # tiny_layout is writable: still not written into
    inside = tmp_path / "input" / "mine"
    inside.mkdir(parents=True)
    assert generated_files_overrides(inside) == []  # data the user put under input/ keeps its folds beside it
    chosen = load_config(None, [f"data.root={tiny_layout}", *generated_files_overrides(tiny_layout), "data.folds_file=elsewhere.csv"])
    assert chosen.data.folds_path == Path("elsewhere.csv")


def test_the_demo_ranks_only_its_own_experiments_and_ensemble(trained, tmp_path, monkeypatch):
    """The quick start's `my_unet` in the same runs folder is the user's: the demo's board leaves it out."""
    import shutil

    from carvana_seg.commands.demo import ENSEMBLE_NAME, demo_leaderboard
    from carvana_seg.recipe.tune import tune
    from carvana_seg.reporting.leaderboard import build_leaderboard

    for kind in ("runs", "oof"):
        shutil.copytree(trained / kind, tmp_path / kind)
    shutil.copytree(tmp_path / "runs" / "plain", tmp_path / "runs" / "my_unet")
    shutil.copytree(tmp_path / "oof" / "plain", tmp_path / "oof" / "my_unet")
    for config in (tmp_path / "runs").rglob("config.yaml"):
        text = config.read_text().replace(str(trained / "runs"), str(tmp_path / "runs")).replace(str(trained / "oof"), str(tmp_path / "oof"))
        config.write_text(text.replace("name: plain", "name: my_unet") if "my_unet" in str(config) else text)
    monkeypatch.chdir(tmp_path)
    tune(["plain", "se"], tmp_path / "runs", name=ENSEMBLE_NAME)
    tune(["my_unet"], tmp_path / "runs", name="my_first")

    everything = build_leaderboard(tmp_path / "runs", tta="hflip", out_dir=tmp_path)
    assert set(everything["experiment"]) == {"plain", "se", "my_unet", f"{ENSEMBLE_NAME} (recipe)", "my_first (recipe)"}
    board = tmp_path / "board"
    board.mkdir()
    table = demo_leaderboard(str(tmp_path / "runs"), ["plain", "se"], ENSEMBLE_NAME, str(board))
    assert set(table["experiment"]) == {"plain", "se", f"{ENSEMBLE_NAME} (recipe)"}
    assert "my_unet" not in (board / "leaderboard.md").read_text() and "my_first" not in (board / "leaderboard.md").read_text()
