"""`runs/<exp>/fold<k>/run.json`: what produced a fold, as nnU-Net's debug.json records it.

Library versions, the device, the process count, the code's git commit, the host, the command
line and the wall time of each session that trained the fold. A fold resumed on another
machine keeps the earlier sessions under `previous`, so its record stays complete. Written
atomically at the start of a session and again at its end (with the error, if it failed).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import accelerate
import torch

from carvana_seg.io_utils import atomic_write_text
from carvana_seg.store.paths import RUN_JSON

GIT_TIMEOUT_S = 5


def git_commit(where: Path | None = None) -> dict:
    """The commit of the code that runs, and whether tracked files differ from it; None outside git."""
    where = where or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunRecord:
    """One session's record in a fold folder; `finish` completes it."""

    def __init__(self, fold_dir: Path, device: torch.device, processes: int, mixed_precision: str, first_epoch: int):
        self.path = Path(fold_dir) / RUN_JSON
        self._start = time.perf_counter()
        previous = []
        if self.path.is_file():
            earlier = json.loads(self.path.read_text())
            previous = [*earlier.pop("previous", []), earlier]
        self.record = {
            "started": _now(),
            "ended": None,
            "wall_seconds": None,
            "status": "running",
            "first_epoch": first_epoch,
            "last_epoch": None,
            "command": [sys.executable, *sys.argv],
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "accelerate": accelerate.__version__,
            "device": device_name(device),
            "processes": processes,
            "mixed_precision": mixed_precision,
            "torch_threads": torch.get_num_threads(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            **git_commit(),
            "previous": previous,
        }
        self._write()

    def finish(self, status: str, last_epoch: int, error: str | None = None) -> None:
        self.record.update(ended=_now(), wall_seconds=round(time.perf_counter() - self._start, 3), status=status, last_epoch=last_epoch)
        if error is not None:
            self.record["error"] = error
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.record, indent=2))
