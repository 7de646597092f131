"""Tune threshold, post-processing and blend weights on out-of-fold predictions; write the recipe.

    python scripts/tune.py --exp unet_plain --tta hflip --name plain
    python scripts/tune.py --exp unet_plain --exp unet_se --tta hflip --name blend
    python scripts/tune.py --runs-dir runs/carvana --exp unet_res_256_shuffle --tta hflip,scale1.25 --name carvana_cpu

The recipe, `submissions/<name>.recipe.json`, is what scripts/predict.py follows; repeat --exp
to blend experiments. It prints the in-sample CV of each step and the nested CV of the whole
tuning (each fold scored by a tuning on the other folds).

Manual: docs/submission.md
"""

from carvana_seg.commands.cli import command_parser, console
from carvana_seg.recipe.tune import AUTO, BLEND_CHOICES, DEFAULT_BLEND_RULE, tune
from carvana_seg.recipe.nested import BLEND_RULES
from carvana_seg.recipe.recipe import Recipe


def main() -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--exp", action="append", required=True, help="experiment name (runs/<exp>); repeat to blend")
    parser.add_argument("--tta", default="none", help="none | hflip | hflip,scale0.75 ... (applied to OOF too)")
    parser.add_argument("--name", default=None, help="recipe name (default: the experiment names)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out-dir", default="submissions")
    rules = "; ".join(f"{k}: {v}" for k, v in {AUTO: "each rule tuned, the best nested CV kept", **BLEND_RULES}.items())
    parser.add_argument("--blend", default=DEFAULT_BLEND_RULE, choices=list(BLEND_CHOICES), help=f"how blend weights are chosen ({rules})")
    args = parser.parse_args()
    recipe = tune(args.exp, args.runs_dir, args.tta, args.name, args.out_dir, blend_rule=args.blend)
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
    print_nested(recipe)
    print(f"recipe: {args.out_dir}/{recipe.name}.recipe.json")


def print_nested(recipe: Recipe) -> None:
    """The in-sample CV beside the nested CV, each fold's choices, and what the nesting cost."""
    nested, seconds = recipe.nested_cv, recipe.cv["seconds"]
    print(f"in-sample CV {nested.in_sample:.5f}: tuned and scored on the same {nested.images} OOF images")
    print(f"nested CV    {nested.mean:.5f} [{nested.low:.5f}, {nested.high:.5f}] (95% interval over {nested.cars} cars): "
          f"each fold scored by the whole tuning run on the other folds only; in-sample - nested = {nested.optimism:+.5f}")
    members = ", ".join(m.exp for m in recipe.members)
    header = ("fold", "images", f"weights ({members})", "thr", "edge refinement", "post-processing", "tuned", "held out")
    row = "  {:>4} {:>6}  {:32s} {:>5}  {:20s} {:32s} {:>7} {:>8}"
    print(row.format(*header))
    for f in nested.folds:
        steps = " + ".join(f.postprocess) or "none"
        weights = " ".join(f"{w:.2f}" for w in f.weights)
        print(row.format(f.fold, f.images, weights, f"{f.threshold_level / 255:.3f}", f.refine, steps, f"{f.tuned_cv:.5f}", f"{f.held_out_cv:.5f}"))
    print(f"choices across folds: {nested.movement()}")
    compared = recipe.cv.get("blend_rules", {})
    if len(compared) > 1:
        each = ", ".join(f"{rule} {cv['nested']:.5f} (in-sample {cv['in_sample']:.5f})" for rule, cv in compared.items())
        print(f"blend rules by nested CV: {each}; kept: {nested.blend_rule} (the best of {len(compared)}, so its nested CV leans slightly optimistic)")
    print(f"time: loading the OOF {seconds['loading']:.1f} s, tuning {seconds['tuning']:.1f} s, nested CV {seconds['nested']:.1f} s more")


cli = console(main)  # the `carvana-tune` console command (pyproject.toml)


if __name__ == "__main__":
    cli()
