"""Train every fold of one or several experiments in turn (finished folds are skipped,
interrupted ones resume), then print each experiment's per-fold and mean Dice.

    python scripts/train_cv.py --config configs/demo/unet_plain.yaml configs/demo/unet_se.yaml [key=value ...]
    accelerate launch scripts/train_cv.py --config configs/carvana_cpu/unet_res.yaml --folds 0 1
"""

import argparse
import sys

from carvana_seg.cli import run
from carvana_seg.config import ConfigError, load_config
from carvana_seg.training.cv import train_experiments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True, help="one YAML per experiment")
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="default: every fold")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every experiment")
    args = parser.parse_intermixed_args()
    # `--config a.yaml b.yaml k=v`: the list flag also swallows the overrides after it.
    paths = [item for item in args.config if "=" not in item]
    overrides = [item for item in args.config if "=" in item] + args.overrides
    try:
        cfgs = [load_config(path, overrides) for path in paths]
    except ConfigError as err:
        parser.exit(2, f"config error: {err}\n")
    scores = train_experiments(cfgs, args.folds)
    if len(scores):
        summary = scores.groupby("exp")["dice"].agg(["mean", "std", "count"])
        print(summary.to_string(float_format="%.4f"), file=sys.stdout)


if __name__ == "__main__":
    run(main)
