"""Train every fold of one or several experiments, then print their per-fold and mean Dice.

    python scripts/train_cv.py --config configs/demo/unet_plain.yaml configs/demo/unet_se.yaml train.epochs=3
    python scripts/train_cv.py --parallel 4 --config configs/carvana_gpu/smp_unet_r34_640.yaml
    accelerate launch --num_processes 2 scripts/train_cv.py --config configs/carvana_cpu/unet_res_192.yaml --folds 0 1

Finished folds are skipped and interrupted ones resume.
`--parallel N` trains N folds at once, each in its own process (several per GPU allowed;
`--gpus 0,1` picks the GPUs, default the visible ones), logging to runs/<exp>/fold<k>/train.log.
Under `accelerate launch` / `torchrun` every fold is trained by all processes together (DDP).
Ctrl-C or SIGTERM stops the fold(s) in training after the current step, each keeping its last
saved epoch; rerunning the same command continues (exit 130 / 143).

Manual: docs/training.md (GPUs: docs/gpu.md)
"""

import argparse
import shlex
import sys

import pandas as pd

from carvana_seg.commands.cli import run
from carvana_seg.config import Config, ConfigError, load_config
from carvana_seg.training.cv import train_experiments
from carvana_seg.training.lifecycle import Interrupted, distributed, exit_stopped, stop_signals
from carvana_seg.training.parallel import train_parallel
from carvana_seg.training.session import training_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True, help="one YAML per experiment")
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="default: every fold")
    parser.add_argument("--parallel", type=int, default=0, metavar="N", help="train N folds at once, one process each")
    parser.add_argument("--gpus", default=None, help="with --parallel: comma list of GPU ids (default: the visible ones)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every experiment")
    args = parser.parse_intermixed_args()
    # `--config a.yaml b.yaml k=v`: the list flag also swallows the overrides after it.
    paths = [item for item in args.config if "=" not in item]
    overrides = [item for item in args.config if "=" in item] + args.overrides
    try:
        cfgs = [load_config(path, overrides) for path in paths]
    except ConfigError as err:
        parser.exit(2, f"config error: {err}\n")
    if args.gpus is not None and not args.parallel:
        parser.exit(2, "--gpus needs --parallel N\n")
    try:
        with stop_signals():
            scores = train(args, paths, overrides, cfgs)
    except Interrupted as stop:
        again = "the same launcher command" if distributed() else shlex.join([sys.executable, *sys.argv])
        exit_stopped(stop, f"{again} (finished folds are skipped, stopped ones resume)")
    if len(scores):  # under DDP only the main process has scores
        summary = scores.groupby("exp")["dice"].agg(["mean", "std", "count"])
        print(summary.to_string(float_format="%.4f"), file=sys.stdout)


def train(args: argparse.Namespace, paths: list[str], overrides: list[str], cfgs: list[Config]) -> pd.DataFrame:
    """Every fold asked for: by --parallel child processes, or in turn in this process."""
    if args.parallel:
        gpus = None if args.gpus is None else [g.strip() for g in args.gpus.split(",") if g.strip()]
        return train_parallel([(path, overrides) for path in paths], args.folds, args.parallel, gpus)
    with training_process():
        return train_experiments(cfgs, args.folds)


def cli() -> None:
    """The `carvana-train` console command (pyproject.toml): a user-fixable error is one line, not a traceback."""
    run(main)


if __name__ == "__main__":
    cli()
