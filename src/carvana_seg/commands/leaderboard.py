"""Write the ablation leaderboard (leaderboard.md, .csv, .png) from every experiment under
runs/ and oof/, and oof/<exp>/worst.png, the 12 lowest-Dice OOF images of each.

Models are ranked by CV at thresholds tuned out of fold, with a 95% interval over cars, the
folds' spread and the unstable folds named; the plot adds the newest ensemble recipe of these
experiments in --submissions-dir.

    python scripts/leaderboard.py [--baseline EXP] [--tta hflip] [--runs-dir runs] [--out-dir .]
"""

import argparse

from carvana_seg.cli import run
from carvana_seg.reporting.leaderboard import build_leaderboard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=None, help="default: the plain U-Net experiment")
    parser.add_argument("--tta", default="hflip")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out-dir", default=".")
    parser.add_argument("--submissions-dir", default="submissions", help="where to look for an ensemble recipe to plot")
    args = parser.parse_args()
    table = build_leaderboard(args.runs_dir, args.baseline, args.tta, args.out_dir, args.submissions_dir)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for note in table.attrs["unfinished"]:
        print(f"not ranked, folds missing: {note}")
    print(f"written: {args.out_dir}/leaderboard.md, leaderboard.csv, leaderboard.png")


def cli() -> None:
    """The `carvana-leaderboard` console command (pyproject.toml): a user-fixable error is one line, not a traceback."""
    run(main)


if __name__ == "__main__":
    cli()
