"""The demo's handling of outside data: generated files go under input/, never into the data folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.config import load_config
from carvana_seg.demo import generated_files_overrides, staged_test_set
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
