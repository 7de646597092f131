"""Train one fold of an experiment and write its out-of-fold predictions.

    python scripts/train_fold.py --config configs/demo/unet_se.yaml --fold 0 exp.name=my_se [key=value ...]
    python scripts/train_fold.py --fold 0   (no --config: configs/default.yaml, about a minute per demo epoch on 2 cores)
    accelerate launch -q --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no scripts/train_fold.py ...
    python scripts/train_fold.py --config configs/tiny.yaml --fold 1 train.epochs=3 --resume
    python -m carvana_seg.training.run_fold ...   (the same; each child of `train_cv.py --parallel`)

Results: runs/<exp>/fold<k>/ (weights, metrics.csv, learning curve, resumable state, run.json)
and oof/<exp>/fold<k>.npz / .json. `--stop-after-epoch N` ends a time-sliced run (a Kaggle
session, say) after epoch N; `--resume` continues it later from the last saved state.
"""

from __future__ import annotations

from carvana_seg.cli import parse_config_args, run
from carvana_seg.training.session import training_process
from carvana_seg.training.trainer import train_fold


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_config_args(
        __doc__,
        extra=[
            ("--fold", {"type": int, "required": True, "help": "which fold to hold out"}),
            ("--resume", {"action": "store_true", "help": "continue from the last saved state"}),
            ("--stop-after-epoch", {"type": int, "default": None, "help": "stop (resumably) after this epoch"}),
        ],
        argv=argv,
    )
    with training_process():
        train_fold(cfg, args.fold, resume=args.resume, stop_after_epoch=args.stop_after_epoch)


if __name__ == "__main__":
    run(main)
