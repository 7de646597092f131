"""Run by benchmarks/gpu/run.sh only when benchmarks/predict.py failed: that script's worker
subprocesses keep their stderr, so its own log shows no cause. This does the same preparation
(the real recipe's shape, untrained weights) and one prediction of 64 photos in this process,
so the traceback shows.

    python benchmarks/gpu/predict_diag.py DEVICE BATCH_SIZE WORKERS
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import predict  # noqa: E402  (benchmarks/predict.py)


def main() -> None:
    device, batch_size, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recipe = predict.prepare(work, "real")
        print("prepared", recipe, flush=True)
        data = predict.test_folder(work, 64)
        print(predict.worker("new", recipe, data, work / "new64.csv", device, batch_size, workers), flush=True)


if __name__ == "__main__":
    main()
