"""Validate a submission file against the sample submission before it is uploaded."""

from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from carvana_seg.ops.rle import CARVANA_RLE, RLEError, RleFormat

HEADER = ["img", "rle_mask"]
MAX_REPORTED = 10


GZIP_MAGIC = b"\x1f\x8b"


def gzip_named(path: Path) -> bool:
    """A submission named *.gz is gzip-compressed, any other is plain text: the name decides."""
    return path.suffix.lower() == ".gz"


def _gzipped(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _open_text(path: Path) -> io.TextIOBase:
    """Plain or gzip-compressed CSV, told apart by the gzip magic bytes, not the name."""
    return gzip.open(path, "rt", newline="") if _gzipped(path) else open(path, newline="")


def name_mismatch(path: str | Path) -> str | None:
    """Why the file's content does not match its name (None when it does, or there is no file):
    gzip data in a file not named .gz, or plain text in one that is. What reads it (an upload
    form, `pandas.read_csv`) goes by the name."""
    path = Path(path)
    if not path.is_file() or _gzipped(path) == gzip_named(path):
        return None
    if gzip_named(path):
        return f"{path}: named .gz but not gzip-compressed: rename it without .gz, or compress it"
    return f"{path}: gzip-compressed but not named .gz: rename it to {path.name}.gz"


def check_submission(
    path: str | Path, sample: str | Path, image_size: tuple[int, int] | Callable[[str], tuple[int, int]] = (1280, 1918), rle_format: RleFormat = CARVANA_RLE,
) -> list[str]:
    """Every problem found (empty when the file is valid): the sample's header, row count, ids
    (as the sample spells them) and order identical to the sample, no image twice, and each RLE
    well formed in `rle_format` for its image's size (an empty mask written as the format says):
    `image_size` is (H, W) for every image, or a function from the image name to its (H, W)."""
    size_of = image_size if callable(image_size) else (lambda name: image_size)
    path, sample = Path(path), Path(sample)
    if not path.is_file():
        return [f"{path}: file not found"]
    with _open_text(sample) as handle:
        sample_rows = list(csv.reader(handle))
    wanted_header, expected = (sample_rows[0] if sample_rows else HEADER), [row[0] for row in sample_rows[1:]]
    problems: list[str] = []
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != wanted_header:
            problems.append(f"{path}: header {header}, expected {wanted_header}")
        rows = list(reader)
    if len(rows) != len(expected):
        problems.append(f"{path}: {len(rows)} rows, the sample has {len(expected)}")
    for source, listed in ((sample, expected), (path, [row[0] for row in rows if row])):
        repeated = [image for image, count in Counter(listed).items() if count > 1]
        if repeated:
            problems.append(f"{source}: {repeated[0]} is listed more than once ({len(repeated)} images repeated)")
    for line, (row, want) in enumerate(zip(rows, expected), start=2):
        if len(problems) >= MAX_REPORTED:
            problems.append("... (more problems not listed)")
            break
        if len(row) != 2:
            problems.append(f"{path}:{line}: {len(row)} fields, expected 2")
            continue
        if row[0] != want:
            problems.append(f"{path}:{line}: image {row[0]!r}, the sample has {want!r} here")
        try:
            rle_format.runs(row[1], tuple(size_of(row[0])), strict_empty=True)
        except RLEError as err:
            problems.append(f"{path}:{line} ({row[0]}): {err}")
    return problems
