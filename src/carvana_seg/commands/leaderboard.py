"""Rank experiments and recipes on their OOF predictions: leaderboard.md, .csv and .png.

    python scripts/leaderboard.py
    python scripts/leaderboard.py --exp unet_plain --exp unet_se --recipe submissions/blend.recipe.json --baseline unet_plain
    python scripts/leaderboard.py --runs-dir runs/carvana --baseline unet_res_192 --out-dir benchmarks/results/carvana_cpu

It reads every experiment under --runs-dir and its OOF (or those given with --exp) and also
writes oof/<exp>/worst.png, the 12 lowest-Dice OOF images of each. Models are ranked by CV at
thresholds tuned out of fold, with a 95% interval over cars, the folds' spread and the
unstable folds named; recipes (--recipe, else those in --submissions-dir
that blend only these experiments) are ranked beside them by their nested CV.

Manual: docs/leaderboard.md
"""

from carvana_seg.commands.cli import command_parser, console
from carvana_seg.reporting.leaderboard import build_leaderboard


def main() -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--baseline", default=None, help="default: the plain U-Net experiment")
    parser.add_argument("--tta", default="hflip")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out-dir", default=".")
    parser.add_argument("--submissions-dir", default="submissions", help="where to look for recipes when no --recipe is given")
    parser.add_argument("--exp", action="append", default=None, help="rank only this experiment (repeat; default: all under --runs-dir)")
    parser.add_argument("--recipe", action="append", default=None, help="rank this recipe (repeat; default: the recipes in --submissions-dir of these experiments)")
    args = parser.parse_args()
    table = build_leaderboard(args.runs_dir, args.baseline, args.tta, args.out_dir, args.submissions_dir, experiments=args.exp, recipes=args.recipe)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for note in table.attrs["unfinished"]:
        print(f"not ranked, folds missing: {note}")
    for note in table.attrs["unranked_recipes"]:
        print(f"not ranked: {note}")
    print(f"written: {args.out_dir}/leaderboard.md, leaderboard.csv, leaderboard.png")


cli = console(main)  # the `carvana-leaderboard` console command (pyproject.toml)


if __name__ == "__main__":
    cli()
