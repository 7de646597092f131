"""Tune threshold, post-processing and blend weights on out-of-fold predictions and write
the recipe `submissions/<name>.recipe.json` that scripts/predict.py follows.

    python scripts/tune.py --exp unet_plain [--exp unet_se ...] [--tta hflip] [--name NAME]
"""

import argparse

from carvana_seg.cli import run
from carvana_seg.inference.tune import tune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", action="append", required=True, help="experiment name (runs/<exp>); repeat to blend")
    parser.add_argument("--tta", default="none", help="none | hflip | hflip,scale0.75 ... (applied to OOF too)")
    parser.add_argument("--name", default=None, help="recipe name (default: the experiment names)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out-dir", default="submissions")
    args = parser.parse_args()
    recipe = tune(args.exp, args.runs_dir, args.tta, args.name, args.out_dir)
    cv = recipe.cv
    print(f"CV Dice at original resolution over {cv['images']} images (TTA: {args.tta}):")
    print(f"{'':24s} {'@0.5':>8s} {'best thr':>9s} {'@best':>8s}")
    for exp, scores in cv["members"].items():
        print(f"{exp:24s} {scores['dice_at_0.5']:8.5f} {scores['threshold']:9.3f} {scores['dice_at_threshold']:8.5f}")
    blend = cv["blend"]
    weights = ", ".join(f"{m.exp}={m.weight:.2f}" for m in recipe.members)
    print(f"blend weights: {weights}; CV at each one's tuned threshold after edge refinement:")
    for label, value in blend["refine_tried"].items():
        print(f"  edge refinement {label:40s} {value:.5f}")
    print(f"chosen edge refinement: {recipe.refine_label()}, threshold {recipe.threshold:.3f} (CV at 0.5: {blend['dice_at_0.5']:.5f})")
    for steps, value in blend["postprocess"].items():
        print(f"  post-processing {steps:40s} {value:.5f}")
    print(f"chosen post-processing: {' + '.join(recipe.postprocess) or 'none'}  ->  CV {blend['dice_final']:.5f}")
    print(f"recipe: {args.out_dir}/{recipe.name}.recipe.json")


def cli() -> None:
    """The `carvana-tune` console command (pyproject.toml): a user-fixable error is one line, not a traceback."""
    run(main)


if __name__ == "__main__":
    cli()
