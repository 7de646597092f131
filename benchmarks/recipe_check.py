"""How much of a recipe's CV is owed to tuning on the very OOF it is scored on?

`tune.py` picks the threshold, edge refinement and post-processing on the OOF predictions and
reports their CV, which is slightly optimistic. This re-scores the recipe's exact chain
(members, weights, TTA, refinement, post-processing) three ways: with the threshold at 0.5
(nothing tuned but the choice of steps), with the recipe's threshold, and with each fold's
threshold tuned on the other folds only (nested; before post-processing). Per fold, and with
a 95% interval over cars for the final number.

    python benchmarks/recipe_check.py --recipe submissions/carvana_cpu.recipe.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from carvana_seg.store.experiment import default_device  # noqa: E402
from carvana_seg.ops.metrics import HALF, dice_by_level, nested_threshold_dice  # noqa: E402
from carvana_seg.data.folds import read_folds  # noqa: E402
from carvana_seg.data.layout import CarvanaLayout, split_id  # noqa: E402
from carvana_seg.recipe.tune import load_member, postprocess_scores, recipe_histograms, tta_label  # noqa: E402
from carvana_seg.recipe.recipe import Recipe  # noqa: E402
from carvana_seg.reporting.leaderboard import paired_bootstrap  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    args = parser.parse_args()
    recipe = Recipe.load(args.recipe)
    members = [load_member(m.exp, m.runs_dir, recipe.tta) for m in recipe.members]
    cfg, oof = members[0].cfg, members[0].oof
    layout, device = CarvanaLayout(cfg.data.root), default_device()
    folds_table = read_folds(cfg.data.folds_path, layout, cfg.data.folds).set_index("img")
    folds = folds_table.loc[[str(i) for i in oof.ids], "fold"].to_numpy()
    cars = np.array([split_id(str(i))[0] for i in oof.ids])

    per_level = dice_by_level(*recipe_histograms(recipe, members, layout, device))
    nested, chosen = nested_threshold_dice(per_level, folds)
    steps = recipe.postprocess
    final = {level: postprocess_scores(recipe.replace(threshold_level=level), members, layout, device, [steps])[steps] for level in (HALF, recipe.threshold_level)}

    rows = {
        "threshold 0.5, before post-processing": per_level[:, HALF],
        f"recipe threshold {recipe.threshold:.3f} (tuned on all OOF), before post-processing": per_level[:, recipe.threshold_level],
        "threshold tuned on the other folds (nested), before post-processing": nested,
        f"threshold 0.5, + {' + '.join(steps) or 'no post-processing'}": final[HALF],
        f"recipe threshold, + {' + '.join(steps) or 'no post-processing'} (the recipe)": final[recipe.threshold_level],
    }
    fold_ids = sorted(np.unique(folds))
    table = [f"| {label} | " + " | ".join(f"{v[folds == f].mean():.5f}" for f in fold_ids) + f" | **{v.mean():.5f}** |" for label, v in rows.items()]
    # paired_bootstrap gives the mean and interval of whatever per-image values it is given (here Dice, not differences)
    recipe_mean, low, high = paired_bootstrap(final[recipe.threshold_level], cars)
    at_half, half_low, half_high = paired_bootstrap(final[HALF], cars)
    worst_car = min(np.unique(cars), key=lambda c: final[recipe.threshold_level][cars == c].mean())
    body = f"""Recipe `{args.recipe}` ({', '.join(f"{m.exp} x{m.weight:.2f}" for m in recipe.members)}; TTA `{tta_label(recipe.tta)}`;
edge refinement {recipe.refine_label()}), {len(oof.ids)} OOF images of {len(np.unique(cars))} cars, mean per-image Dice at original size.

| scoring | {' | '.join(f'fold {f}' for f in fold_ids)} | all |
| --- | {' | '.join('---:' for _ in fold_ids)} | ---: |
{chr(10).join(table)}

Nested thresholds (level/255) per held-out fold: {', '.join(f'fold {f}: {lv}' for f, lv in chosen.items())}; the recipe's: {recipe.threshold_level}.

95% interval over cars (whole cars resampled, 2000 draws): the recipe {recipe_mean:.5f} [{low:.5f}, {high:.5f}];
at threshold 0.5 {at_half:.5f} [{half_low:.5f}, {half_high:.5f}]. Worst car: {worst_car} ({final[recipe.threshold_level][cars == worst_car].mean():.4f}).
"""
    write_result(f"recipe_check_{recipe.name}", f"Recipe {recipe.name}: its CV with and without tuning on the same OOF", body)


if __name__ == "__main__":
    main()
