"""Train one fold of an experiment and write its out-of-fold predictions.

    python scripts/train_fold.py --config configs/demo/unet_se.yaml --fold 0 exp.name=my_se [key=value ...]
    python scripts/train_fold.py --fold 0   (no --config: configs/default.yaml, about a minute per demo epoch on 2 cores)
    accelerate launch -q --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no scripts/train_fold.py ...
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
