"""Compare two experiments on the folds both have finished, before the later one is complete.

The leaderboard ranks finished experiments only; this answers "is the new recipe ahead so
far?" mid-run: per fold and per car, Dice at threshold 0.5 at original size (no TTA), and
the paired difference with a bootstrap interval that resamples whole cars.

    python benchmarks/compare_folds.py --data ../shared/carvana --oof-dir oof/carvana unet_res_192_floor unet_res_192
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from carvana_seg.ops.metrics import HALF, dice_by_level  # noqa: E402
from carvana_seg.recipe.chain import oof_histograms  # noqa: E402
from carvana_seg.recipe.recipe import Recipe  # noqa: E402
from carvana_seg.store.oof import OOF  # noqa: E402
from carvana_seg.store.paths import ExperimentPaths  # noqa: E402
from carvana_seg.data.layout import CarvanaLayout, split_id  # noqa: E402
from carvana_seg.reporting.leaderboard import paired_bootstrap  # noqa: E402

WORST_CARS = 6


def image_dice(oof_dir: Path, exp: str, folds: list[int], layout: CarvanaLayout) -> pd.Series:
    """Per-image Dice at 0.5, original size, over the given folds."""
    parts = []
    for fold in folds:
        oof = OOF.load(ExperimentPaths(Path(), oof_dir / exp).oof_npz(fold))
        positive, negative = oof_histograms(Recipe.single(exp, "runs", len(folds), str(layout.root)), [oof], layout)  # as the fold was scored
        parts.append(pd.Series(dice_by_level(positive, negative)[:, HALF], index=oof.ids))
    return pd.concat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new")
    parser.add_argument("old")
    parser.add_argument("--data", required=True, help="the Carvana-layout folder the OOF images come from")
    parser.add_argument("--oof-dir", default="oof")
    args = parser.parse_args()
    oof_dir, layout = Path(args.oof_dir), CarvanaLayout(args.data)

    def finished(exp: str) -> set[int]:
        return {int(p.stem[4:]) for p in (oof_dir / exp).glob("fold*.json")}

    folds = sorted(finished(args.new) & finished(args.old))
    if not folds:
        raise SystemExit(f"{args.new} and {args.old} have no finished fold in common under {oof_dir}")
    scores = {exp: {f: json.loads((oof_dir / exp / f"fold{f}.json").read_text()) for f in folds} for exp in (args.new, args.old)}
    fold_rows = [
        f"| {f} | {scores[args.old][f]['dice']:.5f} | {scores[args.new][f]['dice']:.5f} | "
        f"{scores[args.new][f].get('kept_epoch', scores[args.new][f]['best_epoch'])} / {scores[args.new][f]['best_epoch']} | "
        f"{scores[args.new][f]['train_seconds']:.0f} s | {scores[args.new][f]['train_images_per_s']:.2f} |"
        for f in folds
    ]

    images = pd.DataFrame({exp: image_dice(oof_dir, exp, folds, layout) for exp in (args.new, args.old)})
    images["car"] = [split_id(i)[0] for i in images.index]
    diff, low, high = paired_bootstrap((images[args.new] - images[args.old]).to_numpy(), images["car"].to_numpy())
    cars = images.groupby("car")[[args.new, args.old]].mean().sort_values(args.new)
    car_rows = [f"| {car} | {row[args.old]:.4f} | {row[args.new]:.4f} |" for car, row in cars.head(WORST_CARS).iterrows()]

    body = f"""Folds {', '.join(map(str, folds))} ({len(images)} OOF images, {len(cars)} cars), Dice at threshold 0.5, original size, no TTA.

| fold | {args.old} | {args.new} | {args.new} kept / best validated epoch | its training loop | img/s |
| --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(fold_rows)}
| mean | {images[args.old].mean():.5f} | {images[args.new].mean():.5f} | | | |

Paired over images, {args.new} - {args.old} = {diff:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}] (cars resampled, 2000 draws).

The {WORST_CARS} worst cars of {args.new}:

| car | {args.old} | {args.new} |
| --- | ---: | ---: |
{chr(10).join(car_rows)}
"""
    write_result(f"compare_{args.new}_vs_{args.old}", f"{args.new} against {args.old}, fold by fold", body)


if __name__ == "__main__":
    main()
