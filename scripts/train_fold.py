"""Train one fold of an experiment and write its out-of-fold predictions.

    accelerate launch scripts/train_fold.py --config configs/demo/unet_se.yaml --fold 0 [key=value ...]
    python scripts/train_fold.py --config configs/tiny.yaml --fold 1 train.epochs=3 --resume

Results: runs/<exp>/fold<k>/ (weights, metrics.csv, learning curve, resumable state, run.json)
and oof/<exp>/fold<k>.npz / .json. `--stop-after-epoch N` ends a time-sliced run (a Kaggle
session, say) after epoch N; `--resume` continues it later from the last saved state.
The command line lives in carvana_seg/training/run_fold.py.
"""

from carvana_seg.cli import run
from carvana_seg.training.run_fold import main

if __name__ == "__main__":
    run(main)
