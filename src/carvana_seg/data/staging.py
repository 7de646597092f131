"""Write a dataset folder in a hidden staging folder and publish it only when complete.

Why: a generator killed halfway through writing in place would leave a folder that looks like
a dataset (some photos, a car missing some of its 16 angles, no CSVs) and that make_folds would
accept. Staged, a killed run leaves only a hidden `.<name>.<random>.partial` folder beside the
output, which nothing reads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from carvana_seg.io_utils import FILE_MODE

FOLDER_MODE = FILE_MODE | 0o111  # what mkdir would give; mkdtemp's 0700 would hide the data from others


@contextlib.contextmanager
def staged_folder(out: Path, stale_patterns: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a hidden folder beside `out` to write into; when the block succeeds, publish it as
    `out`, else remove it. `out` must be absent or empty, or the caller allowed writing into it
    (then files matching `stale_patterns` in `out` are replaced by the staged ones, others kept)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    os.chmod(staging, FOLDER_MODE)
    try:
        yield staging
        _publish(staging, out, stale_patterns)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, out: Path, stale_patterns: Sequence[str]) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        os.replace(staging, out)  # one rename: the folder appears complete or not at all
        return
    # Writing into a non-empty folder: first remove what the new files replace (the CSVs
    # first, so a kill from here on leaves a folder without them, which is refused), then move
    # the folders' files in, and the top-level files last.
    top_files = sorted(p for p in staging.iterdir() if p.is_file())
    for path in top_files:
        (out / path.name).unlink(missing_ok=True)
    for pattern in stale_patterns:
        for path in out.glob(pattern):
            path.unlink()
    for folder in sorted(p for p in staging.iterdir() if p.is_dir()):
        (out / folder.name).mkdir(exist_ok=True)
        for path in sorted(folder.iterdir()):
            os.replace(path, out / folder.name / path.name)
    for path in top_files:
        os.replace(path, out / path.name)
