"""Train one fold of an experiment and write its out-of-fold predictions.

    python scripts/train_fold.py --config configs/demo/unet_se.yaml --fold 0 exp.name=my_se
    python scripts/train_fold.py --config configs/demo/unet_se.yaml --fold 0 exp.name=my_se --resume
    accelerate launch --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no scripts/train_fold.py --config configs/demo/unet_se.yaml --fold 1

The third trains the fold over 2 processes (DDP). Without --config it trains
configs/default.yaml. `python -m carvana_seg.commands.train_fold` is the same command (each
child of `train_cv.py --parallel` runs it).

Results: runs/<exp>/fold<k>/ (weights, metrics.csv, learning curve, resumable state, run.json)
and oof/<exp>/fold<k>.npz / .json. `--stop-after-epoch N` ends a time-sliced run (a Kaggle
session, say) after epoch N; `--resume` continues it later from the last saved state. A fold
that has saved state is never retrained silently: pass `--resume` or `--restart` (deletes the
state, then trains from epoch 1). One process trains a fold at a time (runs/<exp>/fold<k>/.lock).
Ctrl-C or SIGTERM stops after the current step, keeps the last saved epoch and prints the
command that continues it (exit 130 / 143).

Manual: docs/training.md
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from carvana_seg.commands.cli import parse_config_args, positive_int, run
from carvana_seg.training.lifecycle import Interrupted, distributed, exit_stopped, stop_signals
from carvana_seg.training.session import training_process
from carvana_seg.training.trainer import train_fold

MODULE = "carvana_seg.commands.train_fold"  # `python -m` name: how train_cv.py --parallel starts each fold


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_config_args(
        __doc__,
        extra=[
            ("--fold", {"type": int, "required": True, "help": "which fold to hold out"}),
            ("--resume", {"action": "store_true", "help": "continue from the last saved state"}),
            ("--restart", {"action": "store_true", "help": "delete the fold's saved state and train it from epoch 1"}),
            ("--stop-after-epoch", {"type": positive_int, "default": None, "help": "stop (resumably) after this epoch"}),
        ],
        argv=argv,
    )
    try:
        with stop_signals(), training_process():
            train_fold(cfg, args.fold, resume=args.resume, stop_after_epoch=args.stop_after_epoch, restart=args.restart)
    except Interrupted as stop:
        exit_stopped(stop, resume_command(sys.argv[1:] if argv is None else argv))


def resume_command(args: list[str]) -> str:
    """The command that continues this run: its arguments with --resume (and never --restart)."""
    kept = [arg for arg in args if arg not in ("--resume", "--restart")] + ["--resume"]
    script = ["-m", MODULE] if Path(sys.argv[0]).resolve() == Path(__file__).resolve() else [sys.argv[0]]
    if distributed():
        return f"the same launcher command (accelerate launch / torchrun) with {shlex.join([*script, *kept])}"
    return shlex.join([sys.executable, *script, *kept])


if __name__ == "__main__":
    run(main)
