"""Train every fold of one or several experiments, then print their per-fold and mean Dice.

    python scripts/train_cv.py --config configs/demo/unet_plain.yaml configs/demo/unet_se.yaml train.epochs=3
    python scripts/train_cv.py --ray HEAD:6379 --gpus-per-fold 0.5 --cpus-per-fold 4 --config configs/carvana_gpu/smp_unet_r34_640.yaml
    accelerate launch --num_processes 2 scripts/train_cv.py --config configs/carvana_cpu/unet_res_192.yaml --folds 0 1

Finished folds are skipped and interrupted ones resume.
`--parallel N` (`--parallel 4`) trains N folds at once, each in its own process (several per GPU allowed;
`--gpus 0,1` picks the GPUs, default the visible ones), logging to runs/<exp>/fold<k>/train.log.
`--ray ADDRESS` sends every unfinished fold as a task to that Ray cluster (its folders must be
on storage every node shares; checked first); `--ray` alone starts a local Ray runtime, and
`--parallel N` is that runtime with N slots.
Under `accelerate launch` / `torchrun` every fold is trained by all processes together (DDP).
Ctrl-C or SIGTERM stops the fold(s) in training after the current step, each keeping its last
saved epoch; rerunning the same command continues (exit 130 / 143).

Manual: docs/training.md (GPUs: docs/gpu.md)
"""

import argparse
import dataclasses
import math
import os
import shlex
import sys

import pandas as pd

from carvana_seg.commands.cli import console, parse_config_args, usage_error
from carvana_seg.config import Config
from carvana_seg.training.cv import train_experiments
from carvana_seg.training.lifecycle import Interrupted, distributed, exit_stopped, stop_signals
from carvana_seg.training.cluster import LOCAL, Resources, fold_threads, local_resources, train_on_ray, visible_gpus
from carvana_seg.training.session import training_process


RAY_FLAGS = [
    ("--ray", {"nargs": "?", "const": LOCAL, "default": None, "metavar": "ADDRESS",
               "help": "each fold a Ray task on the cluster at ADDRESS (host:port); without ADDRESS a local Ray runtime for the command's length"}),
    ("--cpus-per-fold", {"type": float, "default": 1.0, "metavar": "C", "help": "with --ray: CPUs each fold asks for (default 1)"}),
    ("--gpus-per-fold", {"type": float, "default": 0.0, "metavar": "G", "help": "with --ray: GPUs each fold asks for, fractions share one (default 0)"}),
]


def main() -> None:
    flags = [
        ("--folds", {"nargs": "+", "type": int, "default": None, "help": "default: every fold"}),
        ("--parallel", {"type": int, "default": 0, "metavar": "N", "help": "train N folds at once, one process each"}),
        ("--gpus", {"default": None, "help": "with --parallel: comma list of GPU ids (default: the visible ones)"}),
        *RAY_FLAGS,
    ]
    cfgs, args = parse_config_args(__doc__, flags, several=True)
    if args.gpus is not None and not args.parallel:
        usage_error("--gpus needs --parallel N")
    check_ray_flags(args)
    try:
        with stop_signals():
            scores = train(args, args.config, args.overrides, cfgs)
    except Interrupted as stop:
        again = "the same launcher command" if distributed() else shlex.join([sys.executable, *sys.argv])
        exit_stopped(stop, f"{again} (finished folds are skipped, stopped ones resume)")
    if len(scores):  # under DDP only the main process has scores
        summary = scores.groupby("exp")["dice"].agg(["mean", "std", "count"])
        print(summary.to_string(float_format="%.4f"), file=sys.stdout)


def train(args: argparse.Namespace, paths: list[str], overrides: list[str], cfgs: list[Config]) -> pd.DataFrame:
    """Every fold asked for: as Ray tasks (--ray, --parallel), or in turn in this process."""
    if args.parallel or args.ray:
        return train_on_ray([(path, overrides) for path in paths], args.folds, *scheduler(args))
    with training_process():
        return train_experiments(cfgs, args.folds)


def scheduler(args: argparse.Namespace) -> tuple[str, Resources]:
    """Where the folds go and what each asks for: `--parallel N` is a local runtime of N one-CPU
    slots (the GPUs of --gpus, else the visible ones, shared out); `--ray [ADDRESS]` asks
    --cpus-per-fold and --gpus-per-fold of that cluster (no ADDRESS: a local runtime of this machine's cores)."""
    cores = len(os.sched_getaffinity(0))
    if args.parallel:
        gpus = visible_gpus() if getattr(args, "gpus", None) is None else [g.strip() for g in args.gpus.split(",") if g.strip()]
        return LOCAL, local_resources(args.parallel, gpus, fold_threads(max(1, cores // args.parallel)))
    resources = Resources(args.cpus_per_fold, args.gpus_per_fold, fold_threads(args.cpus_per_fold), slots=max(math.ceil(args.cpus_per_fold), cores))
    if (args.ray or LOCAL) == LOCAL and args.gpus_per_fold:
        resources = dataclasses.replace(resources, gpus=tuple(visible_gpus()))
    return args.ray or LOCAL, resources


def check_ray_flags(args: argparse.Namespace) -> None:
    """--ray and --parallel are two spellings of one scheduler: one at a time, resources positive."""
    if args.ray and "=" in args.ray:
        usage_error(f"--ray {args.ray}: that is a key=value setting, not a cluster address: put --ray last or give it host:port")
    if args.ray and args.parallel:
        usage_error("--ray and --parallel N: give one (--parallel N is --ray on a local runtime of N slots)")
    if args.parallel < 0:
        usage_error(f"--parallel: must be >= 1, got {args.parallel}")
    if (args.cpus_per_fold != 1.0 or args.gpus_per_fold) and not args.ray:
        usage_error("--cpus-per-fold / --gpus-per-fold need --ray")
    if args.cpus_per_fold <= 0 or args.gpus_per_fold < 0 or args.gpus_per_fold > 1 and not args.gpus_per_fold.is_integer():
        usage_error(f"--cpus-per-fold must be > 0 and --gpus-per-fold >= 0 (a fraction below 1 or a whole number), got {args.cpus_per_fold:g} and {args.gpus_per_fold:g}")


cli = console(main)  # the `carvana-train` console command (pyproject.toml)


if __name__ == "__main__":
    cli()
