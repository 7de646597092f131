"""OOF -> recipe -> submission: exact thresholds, TTA, completeness, resume, validation."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from carvana_seg.ops.metrics import batch_level_histograms, dice_by_level, dice_per_image, nested_threshold_dice
from carvana_seg.models.tta import predict_probs
from carvana_seg.recipe.tta import parse_tta
from carvana_seg.errors import PipelineError
from carvana_seg.inference import submit
from carvana_seg.inference.check import check_submission
from carvana_seg.recipe.tune import MIN_GAIN, tune
from carvana_seg.store.oof import check_complete
from carvana_seg.recipe import chain
from carvana_seg.recipe.postprocess import fill_holes, largest_component, min_area
from carvana_seg.ops.rle import Runs
from carvana_seg.recipe.recipe import Member, Recipe, RecipeError, Refine

REPO = Path(__file__).resolve().parents[1]


def test_threshold_sweep_matches_brute_force():
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, (5, 30, 40), dtype=np.uint8)
    masks = (rng.random((5, 30, 40)) < 0.3).astype(np.uint8)
    masks[3] = 0  # an empty truth: scores 1 only where nothing is predicted
    positive, negative = batch_level_histograms(torch.from_numpy(probs), torch.from_numpy(masks))
    fast = dice_by_level(positive.numpy(), negative.numpy())
    for level in range(256):
        brute = dice_per_image(probs >= level, masks)
        np.testing.assert_allclose(fast[:, level], brute, err_msg=f"level {level}")


def test_nested_threshold_is_chosen_without_the_held_out_fold():
    # 3 levels; fold 0 peaks at level 2, folds 1 and 2 at level 0: pooled, level 0 wins
    per_level = np.array(
        [
            [0.1, 0.5, 0.9],  # fold 0
            [0.9, 0.5, 0.1],  # fold 1
            [0.8, 0.6, 0.2],  # fold 2
        ]
    )
    dice, chosen = nested_threshold_dice(per_level, np.array([0, 1, 2]))
    # fold 0 held out: folds 1+2 mean (0.85, 0.55, 0.15) -> level 0, so fold 0 scores 0.1, not its own 0.9
    # fold 1 held out: folds 0+2 mean (0.45, 0.55, 0.55) -> first best, level 1; fold 2: (0.5, 0.5, 0.5) -> level 0
    assert chosen == {0: 0, 1: 1, 2: 0}
    np.testing.assert_allclose(dice, [0.1, 0.5, 0.8])


def test_empty_prediction_of_empty_truth_scores_one():
    empty = np.zeros((1, 4, 4), np.uint8)
    assert dice_per_image(empty, empty)[0] == 1.0


def test_oof_completeness_error_names_the_ids():
    with pytest.raises(PipelineError, match=r"missing 1 \(c_02\); duplicated 1 \(c_01\)"):
        check_complete("exp", ["c_01", "c_01", "c_03"], ["c_01", "c_02", "c_03"])


class FlipEquivariant(torch.nn.Module):
    """A model whose output mirrors its input: row means, so hflip TTA must change nothing."""

    def forward(self, x):
        return x[:, :1] - x[:, :1].mean()


def test_hflip_tta_is_invariant_on_a_flip_symmetric_input():
    half = torch.rand(2, 3, 8, 6)
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)
    model = FlipEquivariant()
    assert torch.allclose(predict_probs(model, symmetric, parse_tta("hflip")), predict_probs(model, symmetric, parse_tta("none")))
    asymmetric = torch.rand(2, 3, 8, 12)
    assert not torch.allclose(
        predict_probs(torch.nn.Conv2d(3, 1, 3, padding=1), asymmetric, parse_tta("hflip")),
        predict_probs(torch.nn.Conv2d(3, 1, 3, padding=1), asymmetric, parse_tta("none")),
    )


def test_postprocessing_steps():
    mask = np.zeros((100, 100), np.uint8)  # min_area drops components under 0.1% = 10 pixels
    mask[2:12, 2:12] = 1
    mask[5:8, 5:8] = 0  # a hole
    mask[15, 15] = 1  # a speck
    runs = Runs.from_mask(mask)
    assert largest_component(runs).to_mask()[15, 15] == 0 and largest_component(runs).to_mask()[2, 2] == 1
    assert fill_holes(runs).to_mask()[6, 6] == 1 and fill_holes(runs).to_mask()[0, 0] == 0
    assert min_area(runs).to_mask()[15, 15] == 0 and min_area(runs).to_mask()[2, 2] == 1


# ---- the validator: one bad file per check -------------------------------------------
@pytest.fixture()
def sample(tmp_path) -> Path:
    path = tmp_path / "sample.csv"
    path.write_text("img,rle_mask\na_01.jpg,1 1\na_02.jpg,1 1\n")
    return path


@pytest.mark.parametrize(
    "content, problem",
    [
        ("img,rle_mask\na_01.jpg,1 2\na_02.jpg,\n", None),
        ("image,rle\na_01.jpg,1 2\na_02.jpg,\n", "header"),
        ("img,rle_mask\na_01.jpg,1 2\n", "1 rows, the sample has 2"),
        ("img,rle_mask\na_02.jpg,1 2\na_01.jpg,\n", "image 'a_02.jpg', the sample has 'a_01.jpg'"),
        ("img,rle_mask\na_01.jpg,5 1 2 1\na_02.jpg,\n", "strictly increasing"),
        ("img,rle_mask\na_01.jpg,1 3 2 1\na_02.jpg,\n", "overlap"),
        ("img,rle_mask\na_01.jpg,19 5\na_02.jpg,\n", "beyond"),
        ("img,rle_mask\na_01.jpg,1 2 3\na_02.jpg,\n", "odd number"),
        ("img,rle_mask\na_01.jpg,1 x\na_02.jpg,\n", "not an integer"),
        ("img,rle_mask\na_01.jpg,1 2,extra\na_02.jpg,\n", "3 fields"),
    ],
)
def test_validator_checks(tmp_path, sample, content, problem):
    path = tmp_path / "sub.csv"
    path.write_text(content)
    problems = check_submission(path, sample, image_size=(4, 5))
    if problem is None:
        assert problems == []
    else:
        assert problems and problem in problems[0], problems
    gz = tmp_path / "sub.csv.gz"
    gz.write_bytes(gzip.compress(content.encode()))
    assert check_submission(gz, sample, image_size=(4, 5)) == [p.replace("sub.csv", "sub.csv.gz") for p in problems]


# ---- the whole chain on tiny data (fixture `trained` in conftest) --------------------
def test_tune_writes_a_recipe_with_blend_and_members(trained):
    recipe = tune(["plain", "se"], trained / "runs", tta="hflip", name="blend", out_dir=trained / "submissions")
    saved = Recipe.load(trained / "submissions" / "blend.recipe.json")
    assert saved == recipe and saved.cv == recipe.cv
    assert set(recipe.cv["members"]) == {"plain", "se"} and abs(sum(recipe.weights) - 1) < 1e-9
    blend = recipe.cv["blend"]
    assert blend["dice_at_threshold"] >= blend["dice_at_0.5"]
    assert blend["dice_final"] >= blend["dice_at_threshold"]  # post-processing only kept if it helps
    assert recipe.cv["images"] == 16
    tried = blend["refine_tried"]  # no refinement plus each guided-filter setting
    assert len(tried) == 4 and blend["dice_at_threshold"] in tried.values()
    # refinement is kept only if a setting beats none by more than MIN_GAIN, and then the best one
    assert (recipe.refine is None) == (max(tried.values()) <= tried["none"] + MIN_GAIN)
    assert recipe.refine is None or blend["dice_at_threshold"] == max(tried.values())


def test_recipe_refinement_is_applied_at_prediction(trained, monkeypatch):
    """Prediction refines every test photo with the recipe's settings (and not without them).

    Whether refinement changes a mask depends on how soft the model's edges are; that it
    moves edges onto the photo's is tested in test_chain.py.
    """
    recipe = tune(["plain"], trained / "runs", name="plain_tuned", out_dir=trained / "submissions")
    raw_path, refined_path = (trained / "submissions" / f"{name}.recipe.json" for name in ("plain_raw", "plain_refined"))
    recipe.replace(name="plain_raw", refine=None).save(raw_path)
    recipe.replace(name="plain_refined", refine=Refine(4, 1e-3)).save(refined_path)

    calls = []
    original = chain.guided_filter

    def spy(guide, src_small, refine):
        calls.append((tuple(guide.shape), refine))
        return original(guide, src_small, refine)

    monkeypatch.setattr(chain, "guided_filter", spy)
    raw = submit.predict_submission(raw_path, workers=0).read_text().splitlines()[1:]
    assert calls == []
    refined = submit.predict_submission(refined_path, workers=0).read_text().splitlines()[1:]
    assert sum(shape[0] for shape, _ in calls) == len(refined) == 4  # every photo refined once
    assert all(refine == Refine(4, 1e-3) and shape[1:] == (48, 72) for shape, refine in calls)
    assert [r.split(",")[0] for r in raw] == [r.split(",")[0] for r in refined]  # same images, same order


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"format": 1}, "format: 1 is not format 2"),
        ({"postprocess": ["largest_component", "dilate"]}, "postprocess"),
        ({"threshold_level": 300}, "threshold_level: 300"),
        ({"threshold": 0.9}, "does not match threshold_level"),
        ({"members": []}, "members: must be a non-empty list"),
        ({"refine": {"radius": 0, "eps": 1e-3}}, "refine: radius"),
        ({"tta": "vflip"}, "tta"),
        ({"colour": "red"}, "colour: unknown key"),
        ({"name": "../../tmp/escape"}, "name: '../../tmp/escape' is not a plain name"),
    ],
)
def test_a_bad_recipe_is_refused_naming_the_field(tmp_path, change, problem):
    good = Recipe("r", (Member("e", "runs", 1.0, 2),), "data").to_json()
    path = tmp_path / "r.recipe.json"
    path.write_text(json.dumps({**good, **change}))
    with pytest.raises(RecipeError, match=problem) as err:
        Recipe.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_recipe_naming_a_missing_run_is_refused_by_predict(tmp_path):
    path = tmp_path / "r.recipe.json"
    Recipe("r", (Member("nowhere", str(tmp_path / "runs"), 1.0, 2),), "data").save(path)
    assert Recipe.load(path).members[0].exp == "nowhere"  # the file is sound; its runs are the store's question
    with pytest.raises(PipelineError, match="experiment 'nowhere'.*config.yaml not found"):
        submit.predict_submission(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.recipe.json"]  # refused before anything is written


def test_tune_refuses_incomplete_oof(trained, tmp_path):
    runs, oof = tmp_path / "runs", tmp_path / "oof"
    shutil.copytree(trained / "runs" / "plain", runs / "plain")
    shutil.copytree(trained / "oof" / "plain", oof / "plain")
    cfg_path = runs / "plain" / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace(str(trained / "oof"), str(oof)).replace(str(trained / "runs"), str(runs)))
    (oof / "plain" / "fold1.npz").unlink()
    with pytest.raises(PipelineError, match="fold1.npz is missing"):
        tune(["plain"], runs, out_dir=tmp_path)


def count_parts(monkeypatch, fail_at: int | None = None) -> dict:
    """Count the chunk parts prediction writes; with `fail_at`, be killed writing that one."""
    original, calls = submit.write_part, {"n": 0}

    def counting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(submit, "write_part", counting)
    return calls


def test_prediction_resumes_after_an_interruption(trained, monkeypatch):
    tune(["plain"], trained / "runs", name="single", out_dir=trained / "submissions")
    recipe = trained / "submissions" / "single.recipe.json"
    out = submit.predict_submission(recipe, chunk_images=2, workers=0)
    reference = out.read_bytes()
    out.unlink()

    count_parts(monkeypatch, fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        submit.predict_submission(recipe, chunk_images=2, workers=0)
    assert not out.exists()  # no half-written submission
    assert len(list(out.with_name(out.name + ".parts").glob("chunk-*.csv"))) == 1
    monkeypatch.undo()
    calls = count_parts(monkeypatch)
    assert submit.predict_submission(recipe, chunk_images=2, workers=0).read_bytes() == reference
    assert calls["n"] == 1  # only the missing chunk was predicted again


def test_stale_chunks_of_another_chunking_are_not_reused(trained, monkeypatch):
    """Killed, then rerun with another --chunk-images: the old parts are dropped, not joined."""
    tune(["plain"], trained / "runs", name="rechunk", out_dir=trained / "submissions")
    recipe = trained / "submissions" / "rechunk.recipe.json"
    reference = submit.predict_submission(recipe, chunk_images=4, workers=0).read_bytes()
    count_parts(monkeypatch, fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        submit.predict_submission(recipe, chunk_images=1, workers=0)
    monkeypatch.undo()
    assert submit.predict_submission(recipe, chunk_images=3, workers=0).read_bytes() == reference


@pytest.mark.slow
def test_two_process_prediction_is_byte_identical(trained):
    recipe = trained / "submissions" / "ddp.recipe.json"
    tune(["plain"], trained / "runs", name="ddp", out_dir=trained / "submissions")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    args = ["scripts/predict.py", "--recipe", str(recipe), "--chunk-images", "1", "--workers", "0"]
    subprocess.run([sys.executable, *args, "--out", str(trained / "one.csv")], cwd=REPO, env=env, check=True, capture_output=True)
    subprocess.run([torchrun, "--nproc_per_node", "2", *args, "--out", str(trained / "two.csv")], cwd=REPO, env=env, check=True, capture_output=True)
    assert (trained / "one.csv").read_bytes() == (trained / "two.csv").read_bytes()
    assert len((trained / "one.csv").read_text().splitlines()) == 1 + 4


# ---- a bad test set is a one-line error naming the file, before any photo is predicted ---
def bad_test_set(trained: Path, tmp_path: Path, how: str) -> Path:
    root = tmp_path / "data"
    shutil.copytree(trained / "data", root)
    sample = root / "sample_submission.csv"
    rows = sample.read_text().splitlines()
    if how == "duplicate id":
        sample.write_text("\n".join([*rows, rows[1]]) + "\n")
    elif how == "header only":
        sample.write_text(rows[0] + "\n")
    elif how == "missing photo":
        (root / "test" / rows[2].split(",")[0]).unlink()
    elif how == "truncated photo":
        photo = root / "test" / rows[2].split(",")[0]
        photo.write_bytes(photo.read_bytes()[:200])
    elif how == "empty test folder":
        for photo in (root / "test").iterdir():
            photo.unlink()
    return root


@pytest.mark.parametrize(
    "how, message",
    [
        ("duplicate id", "sample_submission.csv: test01_01.jpg is listed more than once"),
        ("header only", "sample_submission.csv lists no photos"),
        ("missing photo", "test02_01.jpg is missing"),
        ("empty test folder", "test01_01.jpg is missing"),
        ("truncated photo", "test02_01.jpg"),
    ],
)
def test_a_bad_test_set_is_one_line_naming_the_file(trained, tmp_path, how, message):
    tune(["plain"], trained / "runs", name="badtest", out_dir=trained / "submissions")
    root = bad_test_set(trained, tmp_path, how)
    done = subprocess.run(
        [sys.executable, "scripts/predict.py", "--recipe", str(trained / "submissions" / "badtest.recipe.json"), f"data.root={root}", "--workers", "1", "--out", str(tmp_path / "s.csv")],
        cwd=REPO, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s.csv").exists()


def test_validator_checks_each_row_against_its_own_photo_size(tmp_path, sample):
    path = tmp_path / "sub.csv"
    path.write_text("img,rle_mask\na_01.jpg,15 5\na_02.jpg,15 5\n")  # 20 pixels: fits 4x5, not 2x5
    sizes = {"a_01.jpg": (4, 5), "a_02.jpg": (2, 5)}
    problems = check_submission(path, sample, sizes.__getitem__)
    assert len(problems) == 1 and "a_02.jpg" in problems[0] and "beyond" in problems[0]


def test_validator_refuses_a_repeated_image(tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("img,rle_mask\na_01.jpg,1 1\na_01.jpg,1 1\n")
    path = tmp_path / "sub.csv"
    path.write_text("img,rle_mask\na_01.jpg,1 2\na_01.jpg,\n")
    problems = check_submission(path, sample, (4, 5))
    assert any(f"{sample}: a_01.jpg is listed more than once" in p for p in problems)
    assert any(f"{path}: a_01.jpg is listed more than once" in p for p in problems)


def test_tune_refuses_a_recipe_name_that_is_a_path(trained):
    with pytest.raises(PipelineError, match="--name: '../escape' is not a plain name"):
        tune(["plain"], trained / "runs", name="../escape", out_dir=trained / "submissions")
    assert not (trained / "escape.recipe.json").exists()
