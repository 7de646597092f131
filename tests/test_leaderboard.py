"""The ablation leaderboard and the bootstrap behind its 'better / no difference' verdicts."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from carvana_seg.config import load_config
from carvana_seg.reporting.leaderboard import (
    build_leaderboard,
    describe_model,
    paired_bootstrap,
)


def test_bootstrap_constant_difference_has_a_zero_width_interval():
    assert paired_bootstrap(np.full(50, 0.002)) == pytest.approx((0.002, 0.002, 0.002))


def test_bootstrap_two_images_hand_computed():
    # Resampling [0, 1] twice gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4:
    # the 2.5th percentile is 0 and the 97.5th is 1.
    mean, low, high = paired_bootstrap(np.array([0.0, 1.0]), samples=4000)
    assert (mean, low, high) == (0.5, 0.0, 1.0)


def test_bootstrap_resamples_whole_groups():
    # Two cars: one with diffs all +1 (3 photos), one all -1 (1 photo). Resampling cars,
    # a draw is {A, A}: +1, {B, B}: -1, or {A, B}: (3 - 1) / 4 = 0.5.
    diffs = np.array([1.0, 1.0, 1.0, -1.0])
    mean, low, high = paired_bootstrap(diffs, groups=np.array(["a", "a", "a", "b"]), samples=4000)
    assert mean == 0.5 and low == -1.0 and high == 1.0
    _, low_images, high_images = paired_bootstrap(diffs, samples=4000)
    assert low_images > -1.0  # per-image resampling rarely draws four -1s: a narrower interval


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], "U-Net plain b64 d4"),
        (["model.block=res", "model.upsample=bilinear"], "U-Net res b64 d4 bilinear"),
        (["model.base_channels=16", "model.pixel_shuffle=2"], "U-Net plain b16 d4 shuffle2"),
        (["model.name=smp", "model.encoder=resnet18"], "smp Unet resnet18"),
    ],
)
def test_model_column_names_what_sets_models_apart(overrides, expected):
    assert describe_model(load_config(None, overrides)) == expected


def test_leaderboard_on_two_tiny_experiments(trained, tmp_path):
    table = build_leaderboard(trained / "runs", tta="hflip", out_dir=tmp_path)
    assert list(table["experiment"]) == sorted(table["experiment"], key=lambda e: -table.set_index("experiment").loc[e, "cv_dice_tuned"])
    assert set(table["experiment"]) == {"plain", "se"}
    rows = table.set_index("experiment")
    assert rows.loc["plain", "vs_baseline"] == "baseline"
    assert rows.loc["se", "vs_baseline"].endswith(("better", "worse", "no significant difference"))
    assert rows.loc["plain", "model"] == "U-Net plain b8 d3" and rows.loc["se", "params_M"] > rows.loc["plain", "params_M"]
    assert (rows["cv_dice_tuned"] >= rows["cv_dice_0.5"] - 1e-12).all()
    for name in ("leaderboard.md", "leaderboard.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert pd.read_csv(tmp_path / "leaderboard.csv").shape[0] == 2
    assert "paired bootstrap" in (tmp_path / "leaderboard.md").read_text()
    for exp in ("plain", "se"):
        assert (trained / "oof" / exp / "worst.png").stat().st_size > 0


def test_experiment_with_missing_folds_is_listed_not_ranked(trained, tmp_path):
    from carvana_seg.core.experiment import experiment_config
    from carvana_seg.core.paths import ExperimentPaths

    cfg = experiment_config("plain", trained / "runs")
    cfg.exp.name = "res"
    paths = ExperimentPaths.of(cfg)
    paths.claim(cfg)  # what train_cv does first: the config is there, no fold finished yet
    try:
        table = build_leaderboard(trained / "runs", tta="hflip", out_dir=tmp_path)
    finally:
        shutil.rmtree(paths.run_dir)
    assert set(table["experiment"]) == {"plain", "se"}
    assert table.attrs["unfinished"] == ["res (folds 0, 1 not trained)"]
    assert "Not ranked, folds missing: res (folds 0, 1 not trained)" in (tmp_path / "leaderboard.md").read_text()


def test_leaderboard_with_nothing_finished_names_the_missing_folds(trained, tmp_path):
    from carvana_seg.core.experiment import experiment_config
    from carvana_seg.core.paths import ExperimentPaths
    from carvana_seg.errors import PipelineError

    cfg = experiment_config("plain", trained / "runs")
    cfg.exp.name = "res"
    cfg.exp.runs_dir = str(tmp_path / "runs")
    ExperimentPaths.of(cfg).claim(cfg)
    with pytest.raises(PipelineError, match=r"no finished experiments .*res \(folds 0, 1 not trained\)"):
        build_leaderboard(tmp_path / "runs", out_dir=tmp_path)
