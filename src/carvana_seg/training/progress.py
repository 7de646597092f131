"""`runs/<exp>/fold<k>/progress.json`: one small file a running fold rewrites after each epoch.

`train_cv.py --parallel` / `--ray` reads it to print each fold's line (epoch, last validation Dice,
images/s, ETA) without parsing logs; it is written atomically, so a reader never sees half.
"""

from __future__ import annotations

import json
from pathlib import Path

from carvana_seg.io_utils import atomic_write_text
from carvana_seg.store.paths import PROGRESS_JSON


def write_progress(fold_dir: Path, **fields) -> None:
    atomic_write_text(Path(fold_dir) / PROGRESS_JSON, json.dumps(fields))


def read_progress(fold_dir: Path) -> dict | None:
    """The fold's last progress, or None before its first epoch ends (or if unreadable)."""
    path = Path(fold_dir) / PROGRESS_JSON
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
