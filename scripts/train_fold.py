"""Train one fold of an experiment and write its out-of-fold predictions.

    accelerate launch scripts/train_fold.py --config configs/demo.yaml --fold 0 [key=value ...]
    python scripts/train_fold.py --config configs/tiny.yaml --fold 1 train.epochs=3 --resume

Results: runs/<exp>/fold<k>/ (weights, metrics.csv, learning curve, resumable state) and
oof/<exp>/fold<k>.npz / .json. `--stop-after-epoch N` ends a time-sliced run (a Kaggle
session, say) after epoch N; `--resume` continues it later from the last saved state.
"""

from carvana_seg.cli import parse_config_args, run
from carvana_seg.training.trainer import train_fold


def main() -> None:
    cfg, args = parse_config_args(
        __doc__,
        extra=[
            ("--fold", {"type": int, "required": True, "help": "which fold to hold out"}),
            ("--resume", {"action": "store_true", "help": "continue from the last saved state"}),
            ("--stop-after-epoch", {"type": int, "default": None, "help": "stop (resumably) after this epoch"}),
        ],
    )
    train_fold(cfg, args.fold, resume=args.resume, stop_after_epoch=args.stop_after_epoch)


if __name__ == "__main__":
    run(main)
