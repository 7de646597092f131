"""The dataset on disk: car ids, metadata, the CSVs and the 16 photos (and masks) of each car.

Everything is written into a hidden staging folder that becomes the output folder only
when complete.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from carvana_seg.config import ConfigError, parse_size as parse_pair
from carvana_seg.data.layout import write_mask_gif
from carvana_seg.data.staging import staged_folder
from carvana_seg.data.synthetic.cars import build_car, sample_car
from carvana_seg.data.synthetic.render import ANGLES, make_studio, render_view
from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_path, atomic_write_text
from carvana_seg.ops.rle import rle_encode

# --- Dataset layout -------------------------------------------------------------------------
JPEG_QUALITY = 90
SUBMISSION_RLE = "1 1"  # every row of the official sample submission
METADATA_COLUMNS = ("id", "year", "make", "model", "trim1", "trim2")
STALE_PATTERNS = ("train/*.jpg", "test/*.jpg", "train_masks/*_mask.gif")  # removed by --force

# A made-up catalogue for metadata.csv.
CATALOGUE = {
    "Altura": ("Vela", "Strada", "Cresta"), "Borealis": ("Nord", "Fjell", "Aurora"),
    "Kestrel": ("K3", "K5", "Talon"), "Meridian": ("Equinox", "Solstice", "Zenith"),
    "Orvane": ("Drift", "Pace", "Terra"), "Solano": ("Brisa", "Coral", "Mesa"),
}
TRIMS = (("Base", ""), ("S", ""), ("SE", "w/Tech"), ("LX", ""), ("Sport", "w/Premium"), ("Limited", "AWD"),
         ("Touring", "w/Nav"), ("EX", "w/Leather"))
YEARS = (2008, 2017)


def parse_size(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` (e.g. 1918x1280, the Carvana photo size) -> (width, height)."""
    try:
        width, height = parse_pair(text, "--size")
    except ConfigError:
        width = height = 0
    if min(width, height) < 16:
        raise PipelineError(f"--size: expected WIDTHxHEIGHT, both at least 16 (e.g. 1918x1280), got {text!r}")
    return width, height


def car_ids(seed: int, count: int) -> list[str]:
    """`count` distinct 12-hex-digit car ids, like the competition's, from the seed."""
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    while len(ids) < count:
        car = rng.bytes(6).hex()
        if car not in ids:
            ids.append(car)
    return ids


def _car_rng(seed: int, car: str, stream: int) -> np.random.Generator:
    """Independent streams per car (0: look, 1: metadata): a car does not depend on the others."""
    return np.random.default_rng([seed, int(car, 16), stream])


def _metadata_row(car: str, rng: np.random.Generator) -> list[str]:
    make = list(CATALOGUE)[int(rng.integers(len(CATALOGUE)))]
    model = CATALOGUE[make][int(rng.integers(len(CATALOGUE[make])))]
    trim1, trim2 = TRIMS[int(rng.integers(len(TRIMS)))]
    return [car, str(int(rng.integers(YEARS[0], YEARS[1] + 1))), make, model, f"{model} {trim1}".strip(), trim2]


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[str]], quote_all: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _check_output(out: Path, force: bool) -> None:
    """Refuse a non-empty folder unless forced (when forced, old photos and masks are replaced
    once the new ones are complete, so none go stale: see staging.py)."""
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PipelineError(f"output folder {out} is not empty: pass --force to write into it")


def _write_car(out: Path, car: str, split: str, size: tuple[int, int], seed: int, bar: tqdm) -> list[list[str]]:
    """The 16 photos of one car (and masks for train); returns its train_masks.csv rows."""
    rng = _car_rng(seed, car, 0)
    model = build_car(sample_car(rng))
    studio = make_studio(size, rng)
    rows = []
    for angle in range(1, ANGLES + 1):
        image_id = f"{car}_{angle:02d}"
        photo, mask = render_view(model, studio, angle)
        with atomic_path(out / split / f"{image_id}.jpg") as tmp:
            photo.save(tmp, format="JPEG", quality=JPEG_QUALITY)
        if split == "train":
            with atomic_path(out / "train_masks" / f"{image_id}_mask.gif") as tmp:
                write_mask_gif(mask, tmp)
            rows.append([f"{image_id}.jpg", rle_encode(mask)])
        bar.update()
    return rows


def generate(out: str | Path, cars: int = 8, test_cars: int = 2, size: tuple[int, int] = (1918, 1280),
             seed: int = 0, force: bool = False) -> Path:
    """Write a Carvana-layout dataset: `cars` train and `test_cars` test cars, 16 photos each.

    `size` is (width, height). Same arguments, same bytes. Returns `out`. Everything is written
    into a hidden staging folder that becomes `out` only when complete, so a killed run
    leaves no half dataset.
    """
    if cars < 1 or test_cars < 0:
        raise PipelineError(f"need --cars >= 1 and --test-cars >= 0, got --cars {cars} --test-cars {test_cars}")
    out = Path(out)
    _check_output(out, force)
    with staged_folder(out, STALE_PATTERNS) as staging:
        _write_dataset(staging, cars, test_cars, size, seed)
    return out


def _write_dataset(out: Path, cars: int, test_cars: int, size: tuple[int, int], seed: int) -> None:
    """Write every photo, mask and CSV of the dataset into the (staging) folder `out`."""
    ids = car_ids(seed, cars + test_cars)
    train, test = sorted(ids[:cars]), sorted(ids[cars:])
    for folder in ("train", "train_masks", "test"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rle_rows = []
    with tqdm(total=len(ids) * ANGLES, desc=f"synthetic {size[0]}x{size[1]}", unit="img", disable=None) as bar:
        for car in train:
            rle_rows += _write_car(out, car, "train", size, seed, bar)
        for car in test:
            _write_car(out, car, "test", size, seed, bar)
    submission = [[f"{car}_{angle:02d}.jpg", SUBMISSION_RLE] for car in test for angle in range(1, ANGLES + 1)]
    metadata = [_metadata_row(car, _car_rng(seed, car, 1)) for car in sorted(ids)]
    atomic_write_text(out / "train_masks.csv", _csv_text(["img", "rle_mask"], rle_rows))
    atomic_write_text(out / "sample_submission.csv", _csv_text(["img", "rle_mask"], submission))
    atomic_write_text(out / "metadata.csv", _csv_text(METADATA_COLUMNS, metadata, quote_all=True))
    provenance = {"generator": __package__, "cars": cars, "test_cars": test_cars, "size": list(size), "seed": seed}
    atomic_write_text(out / "synthetic.json", json.dumps(provenance, indent=2) + "\n")  # how the folder was made
