"""Run the whole chain end to end, from data to a validated submission and the leaderboard.

    python scripts/demo.py
    python scripts/demo.py --data ../shared/carvana
    python scripts/demo.py --data ../shared/carvana train.epochs=1 data.size=64x96

What `make demo` runs: synthetic Carvana-style data (or the Carvana-layout folder --data DIR),
grouped folds, the ablation set on every fold, an hflip-TTA ensemble tuned on OOF, a validated
submission and the leaderboard. Rerunning it skips what is done.

Manual: docs/data.md (the demo on real data), README.md (`make demo`)
"""

import argparse

from carvana_seg.cli import run
from carvana_seg.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="a Carvana-layout folder (default: generate synthetic data)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every demo experiment")
    args = parser.parse_intermixed_args()
    run_demo(args.data, overrides=args.overrides)


if __name__ == "__main__":
    run(main)
