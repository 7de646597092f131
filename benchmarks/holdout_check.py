"""Does the nested CV predict what a tuned recipe scores on cars it never saw?

Splits the training cars of a Carvana-layout folder into tuning cars and held-out cars (a
test set whose masks are known), trains the given experiments K-fold on the tuning cars,
tunes one recipe per blend rule on their OOF (with its nested CV), predicts the held-out cars
and scores them against their masks: in-sample CV, nested CV and held-out score side by
side, with 95% intervals over cars, and what the nesting cost.

    python benchmarks/holdout_check.py --data /work/shared/carvana --held-out-cars 12 --name real \\
        --config configs/demo/unet_plain.yaml --config configs/demo/unet_se.yaml data.size=64x96 train.epochs=2

The tuning cars are staged (links) in input/holdout/<name>/ with the held-out photos as its
test/; experiments go to runs/holdout_<name>/ and oof/holdout_<name>/, recipes and their
submissions to submissions/holdout_<name>/, the table to benchmarks/results/holdout_<name>.md.
Re-running skips the folds already trained.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from carvana_seg.commands.cli import run  # noqa: E402
from carvana_seg.config import load_config  # noqa: E402
from carvana_seg.ops.bootstrap import paired_bootstrap  # noqa: E402
from carvana_seg.ops.metrics import dice_per_image  # noqa: E402
from carvana_seg.data.folds import image_groups, make_folds, write_folds  # noqa: E402
from carvana_seg.data.layout import CarvanaLayout, split_id  # noqa: E402
from carvana_seg.errors import PipelineError  # noqa: E402
from carvana_seg.inference.submit import predict_submission  # noqa: E402
from carvana_seg.recipe.tune import load_candidates, save_recipe, tuned_recipe  # noqa: E402
from carvana_seg.names import check_plain_name  # noqa: E402
from carvana_seg.recipe.nested import BLEND_RULES  # noqa: E402
from carvana_seg.recipe.recipe import Recipe  # noqa: E402
from carvana_seg.ops.rle import rle_decode  # noqa: E402
from carvana_seg.training.cv import train_experiments  # noqa: E402


def split_cars(layout: CarvanaLayout, held_out: int, seed: int) -> list[str]:
    """`held_out` cars drawn at random (seeded) from the layout's training cars, sorted."""
    cars = sorted(set(image_groups(layout, layout.train_ids)))
    if not 0 < held_out < len(cars):
        raise PipelineError(f"--held-out-cars {held_out}: choose 1..{len(cars) - 1} of the {len(cars)} training cars in {layout.root}")
    return sorted(np.random.default_rng(seed).choice(cars, held_out, replace=False).tolist())


def link(target: Path, link_path: Path) -> None:
    if link_path.is_symlink() and link_path.resolve() == target.resolve():
        return
    link_path.symlink_to(target.resolve())


def stage(layout: CarvanaLayout, held_out_cars: list[str], folder: Path) -> list[str]:
    """`folder` as a Carvana layout: the tuning cars' photos and masks as train/, the held-out
    cars' photos as test/ (links to the originals). Returns the held-out image ids. A folder
    staged before with another split is refused (its experiments were trained on that one)."""
    split_file, split = folder / "split.json", {"data": str(layout.root.resolve()), "held_out_cars": held_out_cars}
    if split_file.is_file() and json.loads(split_file.read_text()) != split:
        raise PipelineError(f"{folder} was staged from other data or held-out cars ({split_file}): pick another --name")
    ids = layout.train_ids
    held = set(held_out_cars)
    test_ids = [i for i in ids if split_id(i)[0] in held]
    for sub in ("train", "train_masks", "test"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        if image_id in test_ids:
            link(layout.image_path(image_id), folder / "test" / f"{image_id}.jpg")
            continue
        link(layout.image_path(image_id), folder / "train" / f"{image_id}.jpg")
        if layout.mask_path(image_id).is_file():
            link(layout.mask_path(image_id), folder / "train_masks" / layout.mask_path(image_id).name)
    if layout.rle_masks:
        rows = [(f"{i}.jpg", layout.rle_masks[i]) for i in ids if i not in test_ids and i in layout.rle_masks]
        pd.DataFrame(rows, columns=["img", "rle_mask"]).to_csv(folder / "train_masks.csv", index=False)
    pd.DataFrame({"img": [f"{i}.jpg" for i in test_ids], "rle_mask": "1 1"}).to_csv(folder / "sample_submission.csv", index=False)
    split_file.write_text(json.dumps(split))
    return test_ids


def held_out_dice(submission: Path, layout: CarvanaLayout, ids: list[str]) -> np.ndarray:
    """Per-image Dice of a submission's masks against the held-out photos' known masks."""
    rles = pd.read_csv(submission, dtype=str, keep_default_na=False).set_index("img")["rle_mask"]
    scores = []
    for image_id in ids:
        truth = layout.read_mask(image_id)
        scores.append(dice_per_image(rle_decode(rles[f"{image_id}.jpg"], truth.shape)[None], truth[None])[0])
    return np.array(scores)


def tune_rules(names: list[str], runs_dir: str, tta: str, rules: list[str], out: Path, label: str) -> tuple[list[Recipe], dict]:
    """One recipe per blend rule (sharing one set of candidate scores), and what tuning cost:
    the first rule tuned once without and once with its nested CV."""
    start = time.perf_counter()
    candidates = load_candidates(names, runs_dir, tta)
    loaded = time.perf_counter() - start
    plain, _ = tuned_recipe(candidates, f"{label}_{rules[0]}", rules[0], nested=False)
    recipes = []
    for rule in rules:
        recipe, scores = tuned_recipe(candidates, f"{label}_{rule}", rule)
        save_recipe(recipe, scores, out)
        recipes.append(recipe)
    cost = {"loading": loaded, "tuning": plain.cv["seconds"]["tuning"], "nested": recipes[0].cv["seconds"]["nested"]}
    return recipes, cost


def data_origin(root: Path) -> str:
    """The command that generated `root`, when scripts/make_synthetic.py made it (its synthetic.json)."""
    if not (root / "synthetic.json").is_file():
        return ""
    made = json.loads((root / "synthetic.json").read_text())
    width, height = made["size"]
    return (f"Data made by `python scripts/make_synthetic.py --out {root} --cars {made['cars']} --test-cars {made['test_cars']} "
            f"--size {width}x{height} --seed {made['seed']}` (its test cars unused: they have no masks).\n\n")


def report(args: argparse.Namespace, recipes: list[Recipe], scores: dict[str, np.ndarray], cars: np.ndarray, cost: dict, held_out_cars: list[str]) -> str:
    rows = []
    for recipe in recipes:
        nested, held = recipe.nested_cv, scores[recipe.name]
        mean, low, high = paired_bootstrap(held, groups=cars)
        weights = ", ".join(f"{m.exp} {m.weight:.2f}" for m in recipe.members)
        rows.append(
            f"| {nested.blend_rule} | {weights} | {recipe.threshold:.3f} | {recipe.refine_label()} | {' + '.join(recipe.postprocess) or 'none'} "
            f"| {nested.in_sample:.5f} | {nested.mean:.5f} [{nested.low:.5f}, {nested.high:.5f}] | **{mean:.5f}** [{low:.5f}, {high:.5f}] "
            f"| {nested.in_sample - mean:+.5f} | {nested.mean - mean:+.5f} |"
        )
    best = {
        "nested CV": max(recipes, key=lambda r: r.nested_cv.mean).nested_cv.blend_rule,
        "in-sample CV": max(recipes, key=lambda r: r.nested_cv.in_sample).nested_cv.blend_rule,
        "held-out score": max(recipes, key=lambda r: scores[r.name].mean()).nested_cv.blend_rule,
    }
    moves = "\n".join(f"- `{r.nested_cv.blend_rule}`: {r.nested_cv.movement()}; held-out folds " + ", ".join(f"{f.held_out_cv:.4f}" for f in r.nested_cv.folds) for r in recipes)
    first = recipes[0].nested_cv
    return f"""{data_origin(Path(args.data))}Data `{args.data}`: {first.cars} tuning cars ({first.images} images, {len(first.folds)} folds) and {len(held_out_cars)} held-out cars
({len(cars)} images: {', '.join(held_out_cars)}; drawn with seed {args.seed}). Experiments: {', '.join(Path(c).stem for c in args.config)}
with `{' '.join(args.overrides) or 'no overrides'}`; TTA `{args.tta}`. Each rule's recipe is tuned on the tuning cars' OOF, then predicts the
held-out cars; Dice is the mean per-image Dice at original size, intervals are 95% over cars (2000 draws, whole cars resampled).

| blend rule | weights | threshold | edge refinement | post-processing | in-sample CV | nested CV | held-out | in-sample - held-out | nested - held-out |
| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

Best rule by {'; by '.join(f"{k}: `{v}`" for k, v in best.items())} (tune.py's `auto` keeps the best nested CV).

How far each rule's choices move between the nested tunings:
{moves}

Cost of tuning (rule `{first.blend_rule}`): loading the OOF {cost['loading']:.1f} s, tuning without nesting {cost['tuning']:.1f} s,
the nested CV {cost['nested']:.1f} s more (it reuses every candidate the tuning already scored).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a Carvana-layout folder with masks (its train/ is split)")
    parser.add_argument("--held-out-cars", type=int, required=True)
    parser.add_argument("--name", required=True, help="names input/holdout/<name>, runs/holdout_<name>, the results file")
    parser.add_argument("--config", action="append", required=True, help="an experiment preset (repeat)")
    parser.add_argument("--tta", default="hflip")
    parser.add_argument("--seed", type=int, default=0, help="draws the held-out cars")
    parser.add_argument("--rules", default=",".join(BLEND_RULES), help="blend rules to compare, comma-separated")
    parser.add_argument("overrides", nargs="*", help="key=value settings for every experiment")
    args = parser.parse_args()
    check_plain_name(args.name, "--name")  # it names folders
    label = f"holdout_{args.name}"
    unknown = sorted(set(args.rules.split(",")) - set(BLEND_RULES))
    if unknown:
        raise PipelineError(f"--rules: {unknown[0]!r} is not a blend rule ({', '.join(BLEND_RULES)})")
    source = CarvanaLayout(args.data)
    held_out_cars = split_cars(source, args.held_out_cars, args.seed)
    folder = Path("input/holdout") / args.name
    test_ids = stage(source, held_out_cars, folder)
    common = [f"data.root={folder}", f"exp.runs_dir=runs/{label}", f"exp.oof_dir=oof/{label}", *args.overrides]
    cfgs = [load_config(path, common) for path in args.config]
    write_folds(make_folds(CarvanaLayout(folder), cfgs[0].data.folds, cfgs[0].data.fold_seed), cfgs[0].data.folds_path)
    train_experiments(cfgs)
    out = Path("submissions") / label
    recipes, cost = tune_rules([c.exp.name for c in cfgs], f"runs/{label}", args.tta, args.rules.split(","), out, label)
    scores = {}
    for recipe in recipes:
        submission = predict_submission(out / f"{recipe.name}.recipe.json", data_root=str(folder))
        scores[recipe.name] = held_out_dice(submission, source, test_ids)
    body = report(args, recipes, scores, np.array(image_groups(None, list(test_ids))), cost, held_out_cars)
    write_result(label, f"Held-out check {args.name}: in-sample CV, nested CV and the score on held-out cars", body)


if __name__ == "__main__":
    run(main)
