"""Every field of a recipe is checked by type and range on load: a bad one is one line naming
the file, the field and the allowed range, before any model or photo is read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from carvana_seg.config import ConfigError, load_config, save_config
from carvana_seg.recipe.tta import parse_tta
from carvana_seg.errors import PipelineError
from carvana_seg.inference.bundle import export_bundle
from carvana_seg.inference.submit import predict_submission
from carvana_seg.recipe.recipe import Member, Recipe, RecipeError, Refine
from carvana_seg.store.experiment import member_configs

REPO = Path(__file__).resolve().parents[1]
GOOD = Recipe("r", (Member("e", "runs", 1.0, 2),), "data", "hflip", 128, Refine(8, 3e-4), ("largest_component",)).to_json()


def with_member(**fields) -> dict:
    return {"members": [{**GOOD["members"][0], **fields}]}


def with_refine(**fields) -> dict:
    return {"refine": {**GOOD["refine"], **fields}}


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"tta": 5}, "tta: 5 is not a text of views"),
        ({"tta": ["hflip"]}, r"tta: \['hflip'\] is not a text of views"),
        ({"tta": "scale0"}, r"tta: TTA view 'scale0': the scale factor must be in 0.25..2"),
        ({"tta": "hflip,scale100"}, r"tta: TTA view 'scale100': the scale factor must be in 0.25..2"),
        ({"tta": "scale1"}, r"tta: TTA view 'scale1': .*not 1"),
        (with_member(weight=1e308), r"members\[0\].weight: 1e\+308 is not a blend weight: a number in 0..1000"),
        (with_member(weight=float("inf")), r"members\[0\].weight: inf is not a blend weight"),
        (with_member(weight=float("nan")), r"members\[0\].weight: nan is not a blend weight"),
        (with_member(weight=-1), r"members\[0\].weight: -1 is not a blend weight"),
        (with_member(weight=True), r"members\[0\].weight: True is not a blend weight"),
        (with_member(weight=0), "members: the weights add up to 0"),
        (with_member(exp="../runs/e"), r"members\[0\].exp: '../runs/e' is not a plain name"),
        (with_member(exp="/elsewhere/e"), r"members\[0\].exp: '/elsewhere/e' is not a plain name"),
        (with_member(exp=7), r"members\[0\].exp: expected a non-empty name"),
        (with_member(runs_dir=""), r"members\[0\].runs_dir: '' is not a folder: a non-empty string"),
        (with_member(runs_dir=None), r"members\[0\].runs_dir: None is not a folder"),
        (with_member(folds=True), r"members\[0\].folds: True is not a fold count: an integer >= 1"),
        (with_member(folds=2.0), r"members\[0\].folds: 2.0 is not a fold count: an integer >= 1"),
        (with_member(folds=0), r"members\[0\].folds: 0 is not a fold count"),
        ({"members": [5]}, r"members\[0\]: must have exactly the keys exp, runs_dir, weight, folds"),
        (with_refine(radius=100000), r"refine: radius 100000 is not an integer in 1..64"),
        (with_refine(radius=True), r"refine: radius True is not an integer in 1..64"),
        (with_refine(radius=8.5), r"refine: radius 8.5 is not an integer in 1..64"),
        (with_refine(eps=float("inf")), r"refine: eps inf is not a number in \(0, 1\]"),
        (with_refine(eps=float("nan")), r"refine: eps nan is not a number in \(0, 1\]"),
        (with_refine(eps=0), r"refine: eps 0 is not a number in \(0, 1\]"),
        ({"refine": [8, 3e-4]}, "refine: must be null or"),
        ({"threshold": float("nan")}, "threshold: nan is not a number in 0..1"),
        ({"threshold": True}, "threshold: True is not a number in 0..1"),
        ({"threshold_level": True}, "threshold_level: True is not an integer level in 0..255"),
        ({"threshold_level": 128.0}, "threshold_level: 128.0 is not an integer level in 0..255"),
        ({"postprocess": [{}]}, r"postprocess: \[\{\}\]: a list of distinct steps, each one of"),
        ({"postprocess": ["fill_holes", "fill_holes"]}, "postprocess: .*a list of distinct steps"),
        ({"postprocess": "fill_holes"}, "postprocess: 'fill_holes': a list of distinct steps"),
        ({"data_root": ""}, "data_root: '' is not a folder: a non-empty string"),
        ({"data_root": 5}, "data_root: 5 is not a folder"),
        ({"cv": []}, r"cv: \[\] is not an object"),
        ({"name": 5}, "name: expected a non-empty name"),
    ],
)
def test_a_recipe_field_out_of_range_is_one_line_naming_file_field_and_range(tmp_path, change, problem):
    path = tmp_path / "r.recipe.json"
    path.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(RecipeError, match=problem) as err:
        Recipe.load(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def fake_experiment(runs: Path, data: Path, name: str = "e") -> None:
    """An experiment folder holding only its config (2 folds): enough for a recipe to name it."""
    save_config(load_config(REPO / "configs" / "tiny.yaml", [f"exp.name={name}", f"data.root={data}"]), runs / name / "config.yaml")


def test_the_edges_of_each_range_are_accepted(tmp_path):
    fake_experiment(tmp_path / "runs", tmp_path)
    members = (Member("e", str(tmp_path / "runs"), 1000.0, 2), Member("e", str(tmp_path / "runs"), 0.0, 1))
    recipe = Recipe("r", members, "data", "hflip,scale0.25,scale2", 255, Refine(64, 1.0), ())
    recipe.save(tmp_path / "r.recipe.json")
    assert Recipe.load(tmp_path / "r.recipe.json") == recipe
    assert parse_tta("scale0.25,scale2") == ["identity", "scale0.25", "scale2"]


def test_more_folds_than_the_experiment_has_are_refused_by_the_store(tmp_path):
    """The file is well formed, so it loads; whether its members match their runs is the
    experiment store's question, asked by the commands that read the runs."""
    fake_experiment(tmp_path / "runs", tmp_path)
    path = tmp_path / "r.recipe.json"
    Recipe("r", (Member("e", str(tmp_path / "runs"), 1.0, 3),), "data").save(path)
    recipe = Recipe.load(path)
    with pytest.raises(PipelineError, match=rf"^{path}: members\[0\].folds: 3 is more than the 2 folds experiment 'e' has \(1..2\)$"):
        member_configs(recipe.members, str(path))
    assert [cfg.data.folds for cfg in member_configs(recipe.replace(members=(Member("e", str(tmp_path / "runs"), 1.0, 2),)).members, str(path))] == [2]


def test_a_recipe_loads_without_its_runs_but_predict_and_export_refuse_it(tmp_path):
    path = tmp_path / "r.recipe.json"
    Recipe("r", (Member("gone", str(tmp_path / "runs"), 1.0, 2),), "data").save(path)
    assert Recipe.load(path).members[0].exp == "gone"
    expected = rf"^experiment 'gone': {tmp_path / 'runs' / 'gone' / 'config.yaml'} not found"
    with pytest.raises(PipelineError, match=expected):
        predict_submission(path)
    with pytest.raises(PipelineError, match=expected):
        export_bundle(path, tmp_path / "bundle")
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("spec", ["scale0", "scale0.1", "scale100", "scale2.5", "hflip,scale1.0"])
def test_parse_tta_refuses_a_scale_outside_its_range(spec):
    with pytest.raises(ConfigError, match="the scale factor must be in 0.25..2 and not 1"):
        parse_tta(spec)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300)


def test_predict_with_a_bad_recipe_field_is_one_line_and_writes_nothing(tmp_path):
    fake_experiment(tmp_path / "runs", tmp_path)
    path = tmp_path / "r.recipe.json"
    path.write_text(json.dumps({**GOOD, **with_member(runs_dir=str(tmp_path / "runs"), weight=1e308)}))
    before = files_under(tmp_path)
    done = run_script("scripts/predict.py", "--recipe", str(path), "--workers", "0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {path}: members[0].weight: 1e+308 is not a blend weight: a number in 0..1000"]
    assert files_under(tmp_path) == before


def test_tune_with_a_scale_out_of_range_is_one_line_and_writes_nothing(tmp_path, tiny_layout):
    fake_experiment(tmp_path / "runs", tiny_layout)
    before = files_under(tmp_path)
    done = run_script("scripts/tune.py", "--exp", "e", "--runs-dir", str(tmp_path / "runs"), "--tta", "hflip,scale0", "--out-dir", str(tmp_path / "subs"))
    assert done.returncode == 1
    last = "error: TTA view 'scale0': the scale factor must be in 0.25..2 and not 1 (the identity is always predicted)"
    assert done.stderr.strip().splitlines() == [last]
    assert files_under(tmp_path) == before
