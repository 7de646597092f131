"""The nested CV of the whole tuning: each fold's tuning sees only the other folds' images,
the number is each fold's choice scored on that fold, recipes carry it, and the leaderboard
ranks recipes by it beside the models."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carvana_seg.store.oof import OOF, ExperimentOOF
from carvana_seg.errors import PipelineError
from carvana_seg.recipe import tune as tuning
from carvana_seg.recipe.tune import (
    REFINE_CANDIDATES,
    SHRINKAGE,
    Candidates,
    draft_recipe,
    load_candidates,
    nested_tuning,
    per_image_path,
    postprocess_scores,
    search_weights,
    tune,
)
from carvana_seg.recipe.recipe import Recipe, RecipeError
from carvana_seg.reporting.leaderboard import RANKED_BY, build_leaderboard

EXPS = ["plain", "se"]
CHOICE_FIELDS = ("fold", "weights", "threshold_level", "refine", "postprocess", "tuned_cv")


def nested_of(candidates: Candidates, rule: str = "search"):
    draft = draft_recipe(candidates.members, [1.0] * len(candidates.members), candidates.runs_dir, candidates.tta, "n")
    return nested_tuning(candidates, draft, rule, in_sample=1.0)


@pytest.fixture(scope="module")
def tuned(trained, tmp_path_factory):
    """One blend of the two tiny experiments, tuned with its nested CV."""
    out = tmp_path_factory.mktemp("submissions")
    return tune(EXPS, trained / "runs", name="blend", out_dir=out), out


def test_each_fold_is_tuned_on_the_other_folds_images_only(trained, monkeypatch):
    candidates = load_candidates(EXPS, trained / "runs", "none")
    seen = []
    original = tuning.tune_on

    def recording(candidates, draft, images, rule):
        seen.append(set(candidates.members[0].oof.ids[images].tolist()))
        return original(candidates, draft, images, rule)

    monkeypatch.setattr(tuning, "tune_on", recording)
    nested, _ = nested_of(candidates)
    ids, folds = candidates.members[0].oof.ids, candidates.folds
    assert [f.fold for f in nested.folds] == [0, 1] and len(seen) == 2
    for fold, images in zip((0, 1), seen):
        assert images == set(ids[folds != fold].tolist())  # every other fold's image, none of its own


def test_a_folds_choice_does_not_depend_on_its_own_images(trained, tmp_path):
    candidates = load_candidates(EXPS, trained / "runs", "none")
    before, _ = nested_of(candidates)
    held_out = candidates.folds == 0
    spoiled = []
    for member in candidates.members:
        probs = member.oof.probs.copy()
        probs[held_out] = 255 - probs[held_out]  # fold 0's maps turned inside out
        cfg = replace(member.cfg, exp=replace(member.cfg.exp, oof_dir=str(tmp_path)))  # its histogram cache, away from the shared fixture's
        spoiled.append(ExperimentOOF(member.exp, cfg, OOF(member.oof.ids, probs, member.oof.original_sizes)))
    after, _ = nested_of(Candidates(spoiled, candidates.runs_dir, "none", candidates.device))
    choice = [{field: getattr(f, field) for field in CHOICE_FIELDS} for f in (before.folds[0], after.folds[0])]
    assert choice[0] == choice[1]  # fold 0 was tuned on fold 1 alone: same choice
    assert after.folds[0].held_out_cv < before.folds[0].held_out_cv  # scored on the spoiled maps
    assert after.folds[1].tuned_cv != before.folds[1].tuned_cv  # fold 1's tuning did see them


def test_nested_cv_is_each_folds_choice_rescored_on_that_fold(trained, tuned):
    recipe, _ = tuned
    nested = recipe.nested_cv
    candidates = load_candidates(EXPS, trained / "runs", "none")
    refines = {r.label(): r for r in REFINE_CANDIDATES} | {"none": None}
    for fold in nested.folds:
        rows = np.flatnonzero(candidates.folds == fold.fold)
        members = [ExperimentOOF(m.exp, m.cfg, OOF(m.oof.ids[rows], m.oof.probs[rows], m.oof.original_sizes[rows])) for m in candidates.members]
        chosen = draft_recipe(members, list(fold.weights), trained / "runs", "none", "f").replace(
            threshold_level=fold.threshold_level, refine=refines[fold.refine], postprocess=fold.postprocess)
        rescored = postprocess_scores(chosen, members, candidates.layout, candidates.device, [fold.postprocess])[fold.postprocess]
        assert fold.images == len(rows) and rescored.mean() == pytest.approx(fold.held_out_cv, abs=1e-12)
    weighted = sum(f.held_out_cv * f.images for f in nested.folds) / nested.images
    assert nested.mean == pytest.approx(weighted, abs=1e-12) and nested.low <= nested.mean <= nested.high
    assert nested.in_sample == recipe.cv["blend"]["dice_final"] and (nested.images, nested.cars) == (16, 4)


def test_the_recipe_carries_the_nested_cv_and_old_recipes_still_load(tuned, tmp_path):
    recipe, out = tuned
    path = out / "blend.recipe.json"
    loaded = Recipe.load(path)
    assert loaded.nested_cv == recipe.nested_cv and loaded.nested_cv is not None
    scores = pd.read_csv(per_image_path(path))
    assert len(scores) == 16 and scores["dice_nested"].mean() == pytest.approx(recipe.nested_cv.mean, abs=1e-12)
    assert scores["dice_in_sample"].mean() == pytest.approx(recipe.nested_cv.in_sample, abs=1e-12)
    raw = json.loads(path.read_text())
    del raw["nested_cv"]  # a recipe tuned before the nested CV existed
    old = tmp_path / "old.recipe.json"
    old.write_text(json.dumps(raw))
    assert Recipe.load(old).nested_cv is None and Recipe.load(old) == loaded


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda n: n["folds"][0].update(threshold_level=300), "nested_cv: folds[0].threshold_level: 300 is not an integer level"),
        (lambda n: n["folds"][1].update(weights=[1.0]), "nested_cv: folds[1].weights: [1.0] is not a list of 2 weights"),
        (lambda n: n.update(mean=1.5), "nested_cv: mean: 1.5 is not a Dice score"),
        (lambda n: n.update(blend_rule="magic"), "nested_cv: blend_rule: 'magic' is not one of search, shrink, equal"),
        (lambda n: n.pop("cars"), "nested_cv: nested_cv: must be an object with exactly the keys"),
        (lambda n: n["folds"][0].update(postprocess=["dilate"]), "nested_cv: folds[0].postprocess"),
    ],
)
def test_a_bad_nested_cv_is_refused_naming_the_field(tuned, tmp_path, change, problem):
    _, out = tuned
    raw = json.loads((out / "blend.recipe.json").read_text())
    change(raw["nested_cv"])
    path = tmp_path / "bad.recipe.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(RecipeError) as err:
        Recipe.load(path)
    assert str(err.value).startswith(f"{path}: {problem}") and "\n" not in str(err.value)


def test_blend_rules_equal_and_shrink(trained):
    candidates = load_candidates(EXPS, trained / "runs", "none")
    equal, _ = nested_of(candidates, "equal")
    shrunk, _ = nested_of(candidates, "shrink")
    assert all(f.weights == (0.5, 0.5) for f in equal.folds) and equal.blend_rule == "equal"
    for fold in shrunk.folds:
        searched = search_weights(candidates, np.flatnonzero(candidates.folds != fold.fold))
        assert fold.weights == pytest.approx([(1 - SHRINKAGE) * w + SHRINKAGE / 2 for w in searched])


def test_tune_prints_in_sample_and_nested_cv(trained, tmp_path, monkeypatch, capsys):
    from carvana_seg.commands import tune as command

    monkeypatch.setattr(sys, "argv", ["tune.py", "--runs-dir", str(trained / "runs"), "--exp", "plain", "--name", "single", "--out-dir", str(tmp_path)])
    command.main()
    lines = capsys.readouterr().out.splitlines()
    nested = Recipe.load(tmp_path / "single.recipe.json").nested_cv
    assert f"in-sample CV {nested.in_sample:.5f}: tuned and scored on the same 16 OOF images" in lines
    assert any(line.startswith(f"nested CV    {nested.mean:.5f} [{nested.low:.5f}, {nested.high:.5f}] (95% interval over 4 cars)") for line in lines)
    assert sum(line.split()[:1] in (["0"], ["1"]) for line in lines) == 2  # one line per fold's choices
    assert any(line.startswith("choices across folds: ") for line in lines) and any(line.startswith("time: loading the OOF ") for line in lines)


def test_tune_refuses_an_unknown_blend_rule(trained, tmp_path):
    with pytest.raises(PipelineError, match="blend rule 'best': choose one of auto, search, shrink, equal"):
        tune(EXPS, trained / "runs", out_dir=tmp_path, blend_rule="best")
    with pytest.raises(PipelineError, match="blend rule 'auto' chooses by the nested CV"):
        tune(EXPS, trained / "runs", out_dir=tmp_path, nested=False)
    assert list(tmp_path.iterdir()) == []


def test_auto_keeps_the_rule_with_the_best_nested_cv(trained, tuned):
    recipe, _ = tuned  # tuned with the default, auto
    compared = recipe.cv["blend_rules"]
    candidates = load_candidates(EXPS, trained / "runs", "none")
    for rule, cv in compared.items():
        assert cv["nested"] == pytest.approx(nested_of(candidates, rule)[0].mean, abs=1e-12)
    assert list(compared) == ["search", "shrink", "equal"]
    assert recipe.nested_cv.blend_rule == max(compared, key=lambda rule: compared[rule]["nested"])
    assert recipe.nested_cv.mean == compared[recipe.nested_cv.blend_rule]["nested"]


def test_leaderboard_ranks_recipes_by_nested_cv(trained, tuned, tmp_path):
    recipe, out = tuned
    raw = json.loads((out / "blend.recipe.json").read_text())
    del raw["nested_cv"]
    (out / "old.recipe.json").write_text(json.dumps(dict(raw, name="old")))
    try:
        table = build_leaderboard(trained / "runs", tta="hflip", out_dir=tmp_path, submissions_dir=out)
    finally:
        (out / "old.recipe.json").unlink()
    rows = table.set_index("experiment")
    assert set(rows.index) == {"plain", "se", "blend (recipe)"} and list(table[RANKED_BY]) == sorted(table[RANKED_BY], reverse=True)
    row = rows.loc["blend (recipe)"]
    assert (row["kind"], row[RANKED_BY], row["cv_in_sample"]) == ("recipe", recipe.nested_cv.mean, recipe.nested_cv.in_sample)
    assert (row["ci_low"], row["ci_high"]) == (recipe.nested_cv.low, recipe.nested_cv.high)
    assert row["vs_baseline"].endswith(("better", "worse", "no significant difference"))  # paired through the per-image file
    assert table.attrs["unranked_recipes"] == ["recipe old (no nested CV: tuned by an older version; run scripts/tune.py again)"]
    assert "Not ranked: recipe old" in (tmp_path / "leaderboard.md").read_text()


def test_leaderboard_refuses_a_given_recipe_of_another_board(trained, tuned, tmp_path):
    recipe, out = tuned
    other = tmp_path / "other.recipe.json"
    recipe.replace(name="other", members=tuple(m.__class__("gone", m.runs_dir, m.weight, m.folds) for m in recipe.members)).save(other)
    with pytest.raises(PipelineError, match=r"recipe .*other.recipe.json: gone, gone not among the finished experiments of .*runs \(plain, se\)"):
        build_leaderboard(trained / "runs", tta="hflip", out_dir=tmp_path, recipes=[str(other)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.recipe.json"]  # nothing written


def test_the_holdout_check_stages_tuning_cars_and_held_out_cars_apart(tiny_layout, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from holdout_check import split_cars, stage

    from carvana_seg.data.layout import CarvanaLayout

    source = CarvanaLayout(tiny_layout)
    held_out = split_cars(source, 1, seed=0)
    test_ids = stage(source, held_out, tmp_path / "stage")
    staged = CarvanaLayout(tmp_path / "stage")
    assert len(held_out) == 1 and test_ids == [i for i in source.train_ids if i.startswith(held_out[0])] and len(test_ids) == 3
    assert staged.test_ids == test_ids and set(staged.train_ids) == set(source.train_ids) - set(test_ids)
    assert set(staged.rle_masks) == set(staged.train_ids)  # no held-out mask where tuning could read it
    assert not any(staged.mask_path(i).exists() for i in test_ids)
    assert all((staged.read_mask(i) == source.read_mask(i)).all() for i in staged.train_ids)
    with pytest.raises(PipelineError, match="staged from other data or held-out cars"):
        stage(source, split_cars(source, 2, seed=0), tmp_path / "stage")
    with pytest.raises(PipelineError, match="--held-out-cars 4: choose 1..3 of the 4 training cars"):
        split_cars(source, 4, seed=0)
