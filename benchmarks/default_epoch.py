"""How long one epoch of a run with no config takes on the demo data.

`python scripts/train_fold.py --fold 0` without --config uses configs/default.yaml; this runs
exactly that for one epoch (train.epochs=1; everything else as the file says) on the demo's
synthetic data (8 cars, 1918x1280; generated first if --data is missing), with its folds,
cache and results in a temporary folder, and reports the run's own plan and ETA lines, the
training loop's seconds and images/s (oof/<exp>/fold0.json) and the command's wall time.

    python benchmarks/default_epoch.py [--data input/synthetic]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_result  # noqa: E402

from carvana_seg.commands.demo import SYNTHETIC_ARGS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="input/synthetic")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "train_masks.csv").is_file():
        subprocess.run([sys.executable, "scripts/make_synthetic.py", "--out", str(data), *SYNTHETIC_ARGS], cwd=REPO, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        command = [sys.executable, "scripts/train_fold.py", "--fold", "0", "train.epochs=1", f"data.root={data.resolve()}",
                   f"data.folds_file={work / 'folds.csv'}", f"data.cache_dir={work / 'cache'}", f"exp.runs_dir={work / 'runs'}",
                   f"exp.oof_dir={work / 'oof'}"]
        subprocess.run([sys.executable, "scripts/make_folds.py", *command[4:]], cwd=REPO, check=True, capture_output=True)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"error: the run failed:\n{done.stderr[-3000:]}")
        scores = json.loads((work / "oof" / "default" / "fold0.json").read_text())
    said = [line for line in done.stdout.splitlines() if line.startswith(("plan:", "ETA:", "epoch "))]
    body = f"""The run's own lines (stdout):

```
{chr(10).join(said)}
```

| what | value |
| --- | ---: |
| training loop, epoch 1 (96 images) | {scores['train_seconds']:.1f} s |
| training images/s | {scores['train_images_per_s']:.2f} |
| wall time of the command (start-up, cache build, epoch, validation, scoring at 1918x1280) | {wall:.1f} s |
| parameters | {scores['parameters']:,} |
| validation Dice after one epoch, at 0.5, original size | {scores['dice']:.4f} |

The machine is shared: other jobs on its 2 cores slow a step by up to 2x (benchmarks/models.py).
"""
    write_result("default_epoch", "One epoch of a run with no config (configs/default.yaml) on the demo data", body)


if __name__ == "__main__":
    main()
