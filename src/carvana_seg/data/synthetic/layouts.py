"""The synthetic scenes in the other layouts, and a TGS-like small grey variant.

`generate_layout(out, "folders" | "csv", ...)` writes the very cars `generate` writes (same
seed, same photos, lossless PNG instead of JPEG) the way other competitions ship them:

    folders   train/images/<id>.png, train/masks/<id>.png (0/255), test/images/<id>.png,
              sample_submission.csv `id,rle_mask` with ids without extension
    csv       train/<id>.png, train.csv `ImageId,EncodedPixels` (column-major RLE, 1-indexed,
              an empty mask blank), test/<id>.png, sample_submission.csv with `<id>.png` ids

`generate_tgs(out, ...)` writes small 16-bit grey PNGs (values within 0-4095, a 12-bit sensor
in a 16-bit file) in the folders layout, with a given share of empty masks, like TGS Salt:
each image is its own object (no groups). The presets of configs/layouts/ read each one.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from carvana_seg.data.staging import staged_folder
from carvana_seg.data.synthetic.cars import build_car, sample_car
from carvana_seg.data.synthetic.render import ANGLES, make_studio, render_view
from carvana_seg.data.synthetic.writer import _car_rng, _check_output, _csv_text, car_ids
from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_path, atomic_write_text
from carvana_seg.ops.rle import RleFormat

SYNTHETIC_LAYOUTS = ("folders", "csv")
CSV_RLE = RleFormat("column", 1, "")  # what configs/layouts/csv.yaml states
TGS_RLE = RleFormat("column", 1, "")  # what configs/layouts/tgs.yaml states
TGS_LEVELS = 4095  # the grey values' top: configs/layouts/tgs.yaml states data.intensity_range=0-4095
PLACEHOLDER_RLE = "1 1"  # every row of a sample submission


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _scenes(seed: int, cars: list[str], size: tuple[int, int], bar: tqdm):
    """(id, RGB photo, 0/1 mask) of every angle of each car, as `generate` renders them."""
    for car in cars:
        rng = _car_rng(seed, car, 0)
        model, studio = build_car(sample_car(rng)), make_studio(size, rng)
        for angle in range(1, ANGLES + 1):
            photo, mask = render_view(model, studio, angle)
            bar.update()
            yield f"{car}_{angle:02d}", np.asarray(photo.convert("RGB")), mask


def generate_layout(out: str | Path, layout: str, cars: int = 8, test_cars: int = 2, size: tuple[int, int] = (1918, 1280),
                    seed: int = 0, force: bool = False) -> Path:
    """Write the synthetic cars of `generate` in the `folders` or `csv` layout (module docstring)."""
    if layout not in SYNTHETIC_LAYOUTS:
        raise PipelineError(f"--layout {layout!r}: one of carvana, {', '.join(SYNTHETIC_LAYOUTS)}")
    if cars < 1 or test_cars < 1:
        raise PipelineError(f"need --cars >= 1 and --test-cars >= 1 for the {layout} layout, got --cars {cars} --test-cars {test_cars}")
    out = Path(out)
    _check_output(out, force)
    ids = car_ids(seed, cars + test_cars)
    train, test = sorted(ids[:cars]), sorted(ids[cars:])
    folders = {"folders": ("train/images", "train/masks", "test/images"), "csv": ("train", None, "test")}[layout]
    rows, names = [], []
    with staged_folder(out) as staging, tqdm(total=len(ids) * ANGLES, desc=f"synthetic {layout}", unit="img", disable=None) as bar:
        for folder in folders:
            if folder:
                (staging / folder).mkdir(parents=True, exist_ok=True)
        for image_id, photo, mask in _scenes(seed, train, size, bar):
            _save_png(photo, staging / folders[0] / f"{image_id}.png")
            if layout == "folders":
                _save_png(mask * np.uint8(255), staging / folders[1] / f"{image_id}.png")
            else:
                rows.append([image_id, CSV_RLE.encode(mask)])
        for image_id, photo, _ in _scenes(seed, test, size, bar):
            _save_png(photo, staging / folders[2] / f"{image_id}.png")
            names.append(image_id if layout == "folders" else f"{image_id}.png")
        header = ["id", "rle_mask"] if layout == "folders" else ["ImageId", "EncodedPixels"]
        if layout == "csv":
            atomic_write_text(staging / "train.csv", _csv_text(header, rows))
        atomic_write_text(staging / "sample_submission.csv", _csv_text(header, [[n, PLACEHOLDER_RLE] for n in names]))
        provenance = {"generator": __name__, "layout": layout, "cars": cars, "test_cars": test_cars, "size": list(size), "seed": seed}
        atomic_write_text(staging / "synthetic.json", json.dumps(provenance, indent=2) + "\n")
    return out


def tgs_scene(rng: np.random.Generator, size: int, empty: bool) -> tuple[np.ndarray, np.ndarray]:
    """One grey 16-bit image (values within 0-`TGS_LEVELS`) and its 0/1 mask: smooth layered
    texture, and unless `empty` a darker smooth blob touching it, the mask."""
    noise = cv2.GaussianBlur(rng.random((size, size), dtype=np.float32), (0, 0), size / 10)
    rows = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    texture = 0.5 + 0.3 * np.sin(rows * rng.uniform(4, 12) + noise * 6) + 0.2 * (noise - noise.mean()) / (noise.std() + 1e-6) * 0.3
    mask = np.zeros((size, size), np.uint8)
    if not empty:
        centre = tuple(int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
        axes = tuple(int(v) for v in rng.integers(size // 8, size // 3, 2))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        texture = np.where(mask == 1, texture * 0.45, texture)
    texture += rng.normal(0, 0.02, texture.shape).astype(np.float32)
    return (np.clip(texture, 0, 1) * TGS_LEVELS).round().astype(np.uint16), mask


def generate_tgs(out: str | Path, images: int = 40, test_images: int = 8, size: int = 48, empty_share: float = 0.4,
                 seed: int = 0, force: bool = False) -> Path:
    """A TGS-like folders dataset: `images` training and `test_images` test images of
    `size` x `size` pixels, 16-bit grey, `empty_share` of the training masks empty."""
    if images < 2 or test_images < 1 or not 0 <= empty_share < 1 or size < 16:
        raise PipelineError(f"need at least 2 images, 1 test image, size >= 16 and 0 <= empty share < 1, got {images}, {test_images}, {size}, {empty_share}")
    out = Path(out)
    _check_output(out, force)
    rng = np.random.default_rng(seed)
    ids = [rng.bytes(5).hex() for _ in range(images + test_images)]
    empties = set(rng.choice(images, int(round(empty_share * images)), replace=False).tolist())
    with staged_folder(out) as staging:
        for folder in ("train/images", "train/masks", "test/images"):
            (staging / folder).mkdir(parents=True, exist_ok=True)
        for k, image_id in enumerate(ids):
            image, mask = tgs_scene(rng, size, k in empties)
            split = "train" if k < images else "test"
            _save_png(image, staging / split / "images" / f"{image_id}.png")
            if split == "train":
                _save_png(mask * np.uint8(255), staging / "train" / "masks" / f"{image_id}.png")
        atomic_write_text(staging / "sample_submission.csv", _csv_text(["id", "rle_mask"], [[i, PLACEHOLDER_RLE] for i in ids[images:]]))
        provenance = {"generator": __name__, "layout": "tgs", "images": images, "test_images": test_images, "size": size,
                      "empty_share": empty_share, "seed": seed}
        atomic_write_text(staging / "synthetic.json", json.dumps(provenance, indent=2) + "\n")
    return out
