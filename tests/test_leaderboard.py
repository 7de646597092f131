"""The ablation leaderboard and the bootstrap behind its 'better / no difference' verdicts."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from carvana_seg.config import load_config
from carvana_seg.reporting.leaderboard import (
    RANKED_BY,
    UNSTABLE_FOLD_GAP,
    build_leaderboard,
    describe_model,
    out_of_fold_scores,
    paired_bootstrap,
    unstable_folds,
    verdict,
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


def test_in_sample_tuning_flips_the_verdict_out_of_fold_thresholds_do_not():
    # Two folds of four cars (two photos each), three threshold levels. The baseline is
    # calibrated: 0.93 at every level. The fragile model's best level moves: fold 0 peaks at
    # level 0, fold 1 at level 2 (0.99), each 0.88 at the other end. Tuned on all OOF, level 1
    # (0.96 everywhere) wins and the model is "better" than 0.93; each fold at the level the
    # other fold prefers scores 0.88: worse.
    folds = np.repeat([0, 1], 8)
    cars = np.repeat([f"car{c}" for c in range(8)], 2)
    stable = np.full((16, 3), 0.93)
    fragile = np.where(folds[:, None] == 0, [0.99, 0.96, 0.88], [0.88, 0.96, 0.99])
    in_sample = {name: per_level[:, per_level.mean(axis=0).argmax()] for name, per_level in (("stable", stable), ("fragile", fragile))}
    assert verdict(in_sample["fragile"], in_sample["stable"], cars).endswith("better")
    honest = {name: out_of_fold_scores(per_level, folds, cars) for name, per_level in (("stable", stable), ("fragile", fragile))}
    assert verdict(honest["fragile"]["per_image"], honest["stable"]["per_image"], cars) == "-0.0500 [-0.0500, -0.0500] worse"
    assert honest["fragile"]["mean"] == pytest.approx(0.88) and honest["stable"]["mean"] == pytest.approx(0.93)
    np.testing.assert_allclose(honest["fragile"]["fold_means"], [0.88, 0.88])


def test_unstable_folds_are_named_with_the_reason():
    gap = UNSTABLE_FOLD_GAP
    folds = [
        {"fold": 0, "dice": 0.95, "dice_train_res": 0.95, "best_dice_train_res": 0.95, "kept_epoch": 8, "best_epoch": 8},
        {"fold": 1, "dice": 0.95 - 10 * gap, "dice_train_res": 0.90, "best_dice_train_res": 0.90 + 2 * gap, "kept_epoch": 8, "best_epoch": 2},
        {"fold": 2, "dice": 0.95 - gap / 2, "dice_train_res": 0.94, "best_dice_train_res": 0.94 + gap / 2, "kept_epoch": 8, "best_epoch": 5},
    ]
    notes = unstable_folds(folds)
    assert [n.split()[:2] for n in notes] == [["fold", "1"], ["fold", "1"]]  # fold 2 is within the gap on both counts
    assert "at 0.5 (median 0.945)" in notes[0] and "kept epoch 8" in notes[1] and "best epoch 2" in notes[1]


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
    assert list(table["experiment"]) == sorted(table["experiment"], key=lambda e: -table.set_index("experiment").loc[e, RANKED_BY])
    assert set(table["experiment"]) == {"plain", "se"}
    rows = table.set_index("experiment")
    assert rows.loc["plain", "vs_baseline"] == "baseline"
    assert rows.loc["se", "vs_baseline"].endswith(("better", "worse", "no significant difference"))
    assert rows.loc["plain", "model"] == "U-Net plain b8 d3" and rows.loc["se", "params_M"] > rows.loc["plain", "params_M"]
    assert ((rows["ci_low"] <= rows[RANKED_BY]) & (rows[RANKED_BY] <= rows["ci_high"])).all()
    assert (rows["fold_min"] <= rows[RANKED_BY]).all() and (rows["fold_std"] >= 0).all()
    for name in ("leaderboard.md", "leaderboard.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert pd.read_csv(tmp_path / "leaderboard.csv").shape[0] == 2
    assert "paired bootstrap" in (tmp_path / "leaderboard.md").read_text()
    for exp in ("plain", "se"):
        assert (trained / "oof" / exp / "worst.png").stat().st_size > 0


def test_experiment_with_missing_folds_is_listed_not_ranked(trained, tmp_path):
    from carvana_seg.store.experiment import experiment_config
    from carvana_seg.store.paths import ExperimentPaths

    cfg = experiment_config("plain", trained / "runs")
    cfg = replace(cfg, exp=replace(cfg.exp, name="res"))
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
    from carvana_seg.store.experiment import experiment_config
    from carvana_seg.store.paths import ExperimentPaths
    from carvana_seg.errors import PipelineError

    cfg = experiment_config("plain", trained / "runs")
    cfg = replace(cfg, exp=replace(cfg.exp, name="res", runs_dir=str(tmp_path / "runs")))
    ExperimentPaths.of(cfg).claim(cfg)
    with pytest.raises(PipelineError, match=r"no finished experiments .*res \(folds 0, 1 not trained\)"):
        build_leaderboard(tmp_path / "runs", out_dir=tmp_path)
