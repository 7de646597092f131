"""Read a dataset root in the Carvana layout.

    train/<car>_<NN>.jpg          train_masks/<car>_<NN>_mask.gif   train_masks.csv (img,rle_mask)
    test/<car>_<NN>.jpg           sample_submission.csv (img,rle_mask)   metadata.csv

Image ids are file stems (`00087a6bd4dc_01`). Every problem with a file (missing mask,
unreadable image, wrong mask values, size mismatch) is an error naming the file: nothing
is skipped silently, because a silently skipped image changes the CV score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from carvana_seg.errors import PipelineError
from carvana_seg.rle import RLEError, rle_decode

ID_PATTERN = re.compile(r"^(?P<car>.+)_(?P<angle>\d+)$")


class DataError(PipelineError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


def split_id(image_id: str) -> tuple[str, int]:
    """`<car>_<NN>` -> (car, angle)."""
    match = ID_PATTERN.match(image_id)
    if not match:
        raise DataError(f"image name {image_id!r} is not of the form <car>_<NN>")
    return match["car"], int(match["angle"])


def read_image(path: Path, draft_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an RGB image as HxWx3 uint8.

    `draft_size` (width, height) lets libjpeg decode at a reduced scale (1/2, 1/4, 1/8) that
    is still at least that size: several times faster when the image will be downscaled.
    """
    try:
        with Image.open(path) as img:
            if draft_size is not None:
                img.draft("RGB", draft_size)
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its header only."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, SyntaxError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def read_mask_file(path: Path) -> np.ndarray:
    """Read a mask as HxW uint8 0/1: palette GIF 0/1 or single-channel 0/255."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "1"):
                raise DataError(f"mask {path}: mode {img.mode!r}, expected a palette (P) or single-channel (L) mask")
            values = np.asarray(img.convert("L") if img.mode == "1" else img)
    except (OSError, SyntaxError) as err:
        raise DataError(f"cannot read mask {path}: {err}") from err
    if values.max(initial=0) <= 1:
        return values.astype(np.uint8, copy=False)
    foreground = values == 255
    if np.count_nonzero(foreground) + np.count_nonzero(values == 0) == values.size:
        return foreground.astype(np.uint8)
    present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    raise DataError(f"mask {path}: values {present[:10].tolist()} are neither 0/1 nor 0/255")


def write_mask_gif(mask: np.ndarray, path: Path) -> None:
    """Write a 0/1 mask as the competition does: a palette GIF, index 0 black, 1 white."""
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.save(path, format="GIF", optimize=False)


@dataclass(frozen=True)
class CarvanaLayout:
    """One dataset root. Masks come from `train_masks/` GIFs, else from `train_masks.csv`."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if not self.root.is_dir():
            raise DataError(f"dataset root {self.root} does not exist")

    # ---- train -----------------------------------------------------------------------
    @cached_property
    def train_ids(self) -> list[str]:
        train_dir = self.root / "train"
        if not train_dir.is_dir():
            raise DataError(f"{train_dir} is missing: a Carvana-layout root has train/<car>_<NN>.jpg")
        ids = sorted(p.stem for p in train_dir.glob("*.jpg"))
        if not ids:
            raise DataError(f"{train_dir} holds no .jpg images")
        for image_id in ids:
            split_id(image_id)
        return ids

    def image_path(self, image_id: str, split: str = "train") -> Path:
        return self.root / split / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path:
        return self.root / "train_masks" / f"{image_id}_mask.gif"

    @cached_property
    def rle_masks(self) -> dict[str, str]:
        """`train_masks.csv` as {image id: rle}; empty when the file is absent."""
        path = self.root / "train_masks.csv"
        if not path.is_file():
            return {}
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if list(table.columns) != ["img", "rle_mask"]:
            raise DataError(f"{path}: columns {list(table.columns)}, expected ['img', 'rle_mask']")
        return dict(zip(table["img"].str.removesuffix(".jpg"), table["rle_mask"]))

    def read_mask(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """The mask of a train image as HxW uint8 0/1, checked against the image's size."""
        if shape is None:
            shape = image_size(self.image_path(image_id))
        path = self.mask_path(image_id)
        if path.is_file():
            mask = read_mask_file(path)
            if mask.shape != shape:
                raise DataError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}")
            return mask
        if image_id in self.rle_masks:
            try:
                return rle_decode(self.rle_masks[image_id], shape)
            except RLEError as err:
                raise DataError(f"{self.root / 'train_masks.csv'}: row {image_id}.jpg: {err}") from err
        raise DataError(f"no mask for {self.image_path(image_id)}: neither {path} nor a row in train_masks.csv")

    def mask_area(self, image_id: str) -> float:
        """Fraction of foreground pixels; from train_masks.csv when it has the row (no decoding)."""
        shape = image_size(self.image_path(image_id))
        if image_id in self.rle_masks:
            lengths = np.array(self.rle_masks[image_id].split()[1::2], dtype=np.int64)
            return float(lengths.sum()) / (shape[0] * shape[1])
        return float(self.read_mask(image_id, shape).mean())

    # ---- test ------------------------------------------------------------------------
    @cached_property
    def test_ids(self) -> list[str]:
        """Test image ids in the order of `sample_submission.csv` (the order the file must keep)."""
        path = self.root / "sample_submission.csv"
        if not path.is_file():
            raise DataError(f"{path} is missing: it defines the test set and the submission's row order")
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if list(table.columns) != ["img", "rle_mask"]:
            raise DataError(f"{path}: columns {list(table.columns)}, expected ['img', 'rle_mask']")
        return table["img"].str.removesuffix(".jpg").tolist()
