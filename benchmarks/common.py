"""Helpers shared by the benchmark scripts: locating the real data and writing result tables."""

from __future__ import annotations

import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from carvana_seg.io_utils import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
REAL_CARVANA = REPO.parent / "shared" / "carvana"
RESULTS = REPO / "benchmarks" / "results"


def machine_line() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def write_result(name: str, title: str, body: str) -> Path:
    """Write `benchmarks/results/<name>.md` with the command that produced it at the top."""
    command = "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).resolve().relative_to(REPO).as_posix(), *sys.argv[1:]])
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"# {title}\n\nCommand: `{command}`  \nRun: {when} on {machine_line()}\n\n{body.strip()}\n"
    path = RESULTS / f"{name}.md"
    atomic_write_text(path, text)
    print(text)
    return path
