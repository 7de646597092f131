"""Read a dataset root in the Carvana layout.

    train/<car>_<NN>.jpg          train_masks/<car>_<NN>_mask.gif   train_masks.csv (img,rle_mask)
    test/<car>_<NN>.jpg           sample_submission.csv (img,rle_mask)   metadata.csv

Image ids are file stems (`00087a6bd4dc_01`); a photo's `.jpg` may be in any case (`X.JPG`).
Every problem with a file (missing mask, unreadable image, wrong mask values, size mismatch,
a malformed RLE row, a header claiming more than `max_pixels()` pixels, a `.jpg` that is not
a JPEG, GIFs and train_masks.csv that disagree) is an error naming the file: nothing is
skipped silently, because a silently skipped image changes the CV score.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from carvana_seg.errors import PipelineError
from carvana_seg.ops.rle import CARVANA_RLE, RLEError, rle_decode, rle_runs

ID_PATTERN = re.compile(r"^(?P<car>.+)_(?P<angle>\d+)$")
PHOTO_SUFFIX = ".jpg"  # compared case-insensitively: `X.JPG` is the photo of id X
PHOTO_FORMATS = ("JPEG", "MPO")  # what PIL calls a JPEG file's content (MPO: a JPEG with a multi-picture extension)
MASK_SUFFIX = "_mask.gif"  # train_masks/<id>_mask.gif
MASK_SAMPLE = 8  # rows of train_masks.csv decoded and compared with their GIFs when both exist
PHOTOS_PER_CAR = 16  # Carvana shoots every car from 16 angles, NN = 01..16

# Decompression bombs: a 4 KB JPEG can claim 30000x30000 pixels (2.7 GB decoded). Every
# image's header size is checked against this limit before anything is decoded. The default
# is 25x a Carvana photo (1918x1280 = 2.5 MP); raise it with the environment variable.
MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "CARVANA_MAX_PIXELS"

# Our own limit (checked before decoding, with an error naming the file) replaces PIL's, whose
# warning would only add noise; PIL's error above 2x its limit is caught and named the same way.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class DataError(PipelineError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


def split_id(image_id: str) -> tuple[str, int]:
    """`<car>_<NN>` -> (car, angle)."""
    match = ID_PATTERN.match(image_id)
    if not match:
        raise DataError(f"image name {image_id!r} is not of the form <car>_<NN>")
    return match["car"], int(match["angle"])


def max_pixels() -> int:
    """The largest width x height an image header may claim: `$CARVANA_MAX_PIXELS`, else `MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise DataError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive whole number of pixels")
    return int(text)


@contextlib.contextmanager
def open_image(path: Path, what: str = "image") -> Iterator[Image.Image]:
    """Open an image whose header size is within `max_pixels()`; any failure while the block
    reads it (unreadable, truncated, a decompression bomb) is a DataError naming the file."""
    limit = max_pixels()
    try:
        with Image.open(path) as img:
            if img.width * img.height > limit:
                raise DataError(
                    f"{what} {path}: header claims {img.width}x{img.height} = {img.width * img.height:,} pixels, "
                    f"over the limit of {limit:,} (a decompression bomb?); raise it with {MAX_PIXELS_ENV}=N"
                )
            yield img
    except Image.DecompressionBombError as err:
        raise DataError(f"{what} {path}: {err} (refused before decoding)") from err
    except (OSError, SyntaxError) as err:
        raise DataError(f"cannot read {what} {path}: {err}") from err


def _check_jpeg(img: Image.Image, path: Path) -> None:
    """A photo's content must be a JPEG whatever its name says: `predict.py --decode device`
    decodes JPEG only, so a PNG named `.jpg` is refused here, by both decoding paths alike."""
    if img.format not in PHOTO_FORMATS:
        raise DataError(f"photo {path}: its content is {img.format or 'an unknown format'}, not JPEG: save it as a JPEG (or remove it)")


def read_image(path: Path, draft_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a photo (a JPEG) as HxWx3 uint8 RGB.

    `draft_size` (width, height) lets libjpeg decode at a reduced scale (1/2, 1/4, 1/8) that
    is still at least that size: several times faster when the image will be downscaled.
    """
    with open_image(path) as img:
        _check_jpeg(img, path)
        if draft_size is not None:
            img.draft("RGB", draft_size)
        return np.asarray(img.convert("RGB"))


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of a photo from its header only (a JPEG within `max_pixels()`)."""
    with open_image(path) as img:
        _check_jpeg(img, path)
        return img.height, img.width


def read_grey(path: Path) -> np.ndarray:
    """The photo as uint8 grey levels at full size.

    A JPEG is decoded to its luma plane only (libjpeg's grayscale output): Y is the same
    0.299 R + 0.587 G + 0.114 B as OpenCV's RGB->grey, without decoding the two chroma planes
    or converting colours, so the guide costs a fraction of a full decode. It differs from
    grey-of-RGB by a small fraction of a level on average (tests/test_device_decode.py), a few
    saturated pixels by more, where RGB clips."""
    with open_image(path, "photo") as img:
        img.draft("L", img.size)  # a no-op for formats other than JPEG
        return np.array(img.convert("L"))  # writable: it becomes a tensor


def check_photos(paths: list[Path]) -> list[tuple[int, int]]:
    """Read every photo's header up front: a missing, unreadable, oversized or non-JPEG photo
    is a one-line error naming it now, not a DataLoader worker's traceback mid-epoch.
    Returns each photo's (height, width)."""
    sizes = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"photo {path} is missing")
        sizes.append(image_size(path))
    return sizes


def read_mask_file(path: Path) -> np.ndarray:
    """Read a mask as HxW uint8 0/1: palette GIF 0/1 or single-channel 0/255."""
    with open_image(path, "mask") as img:
        if img.mode not in ("P", "L", "1"):
            raise DataError(f"mask {path}: mode {img.mode!r}, expected a palette (P) or single-channel (L) mask")
        values = np.asarray(img.convert("L") if img.mode == "1" else img)
    if values.max(initial=0) <= 1:
        return values.astype(np.uint8, copy=False)
    foreground = values == 255
    if np.count_nonzero(foreground) + np.count_nonzero(values == 0) == values.size:
        return foreground.astype(np.uint8)
    present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    raise DataError(f"mask {path}: values {present[:10].tolist()} are neither 0/1 nor 0/255")


def _check_mask_shape(path: Path, mask_hw: tuple[int, int], image_hw: tuple[int, int]) -> None:
    if tuple(mask_hw) != tuple(image_hw):
        raise DataError(f"mask {path} is {mask_hw[1]}x{mask_hw[0]} but its image is {image_hw[1]}x{image_hw[0]}")


def write_mask_gif(mask: np.ndarray, path: Path) -> None:
    """Write a 0/1 mask as the competition does: a palette GIF, index 0 black, 1 white."""
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.save(path, format="GIF", optimize=False)


@dataclass(frozen=True)
class CarvanaLayout:
    """One dataset root. Masks come from `train_masks/` GIFs, else from `train_masks.csv`; where
    both exist they must agree (`check_mask_sources`)."""

    root: Path

    # What every layout offers the pipeline (data/layouts.py has the others): Carvana's photos
    # are RGB JPEGs, its RLE is the competition's, and its submission spells ids `<id>.jpg`.
    channels = 3
    rle_format = CARVANA_RLE
    cache_tag = ""  # settings a cache depends on beyond its files: none here

    def read_photo(self, path: Path, draft_size: tuple[int, int] | None = None) -> np.ndarray:
        return read_image(path, draft_size)

    def photo_size(self, path: Path) -> tuple[int, int]:
        return image_size(path)

    def check_photos(self, paths: list[Path]) -> list[tuple[int, int]]:
        return check_photos(paths)

    def read_guide(self, path: Path) -> np.ndarray:
        return read_grey(path)

    def source_files(self, ids: list[str], split: str) -> list[Path]:
        """The files a resized cache of `ids` is made from (its key covers their sizes and times)."""
        files = [self.image_path(i, split) for i in ids]
        if split == "train":
            files += [self.mask_path(i) for i in ids] + [self.root / "train_masks.csv"]
        return files

    def folder(self, split: str) -> Path:
        return self.root / split

    @property
    def sample_path(self) -> Path:
        return self.root / "sample_submission.csv"

    @property
    def submission_header(self) -> list[str]:
        return ["img", "rle_mask"]

    @property
    def submission_names(self) -> list[str]:
        """Each test id as the submission spells it, in the sample's order."""
        return [f"{image_id}.jpg" for image_id in self.test_ids]

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if not self.root.is_dir():
            raise DataError(f"dataset root {self.root} does not exist")
        object.__setattr__(self, "_photos", {})  # split -> {id: path}, listed once

    def photos(self, split: str) -> dict[str, Path]:
        """{id: path} of the photos in `<root>/<split>/`, `.jpg` in any case; empty if no folder.

        Why any case: a folder may mix `X.JPG` and `.jpg` photos; a case-sensitive match would
        leave the `.JPG` ones out of training without a word.
        Two files for one id (`X.jpg` and `X.JPG`) are an error naming both.
        """
        if split not in self._photos:
            folder, found = self.root / split, {}
            for path in sorted(folder.iterdir()) if folder.is_dir() else ():
                if path.suffix.lower() != PHOTO_SUFFIX or path.name.startswith("."):
                    continue
                if path.stem in found:
                    raise DataError(f"{found[path.stem]} and {path} are two photos of one id: keep one")
                found[path.stem] = path
            self._photos[split] = found
        return self._photos[split]

    # ---- train -----------------------------------------------------------------------
    @cached_property
    def train_ids(self) -> list[str]:
        train_dir = self.root / "train"
        if not train_dir.is_dir():
            raise DataError(f"{train_dir} is missing: a Carvana-layout root has train/<car>_<NN>.jpg")
        ids = sorted(self.photos("train"))
        if not ids:
            raise DataError(f"{train_dir} holds no .jpg images")
        for image_id in ids:
            split_id(image_id)
        return ids

    def image_path(self, image_id: str, split: str = "train") -> Path:
        """The photo of `image_id`, whatever the case of its `.jpg`; `<id>.jpg` when there is none
        (so the reader's error names the file that was expected)."""
        return self.photos(split).get(image_id, self.root / split / f"{image_id}{PHOTO_SUFFIX}")

    def mask_path(self, image_id: str) -> Path:
        return self.root / "train_masks" / f"{image_id}{MASK_SUFFIX}"

    @cached_property
    def rle_masks(self) -> dict[str, str]:
        """`train_masks.csv` as {image id: rle}; empty when the file is absent."""
        path = self.root / "train_masks.csv"
        if not path.is_file():
            return {}
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if list(table.columns) != ["img", "rle_mask"]:
            raise DataError(f"{path}: columns {list(table.columns)}, expected ['img', 'rle_mask']")
        ids = table["img"].str.replace(r"\.jpg$", "", case=False, regex=True)
        repeated = ids[ids.duplicated()].tolist()
        if repeated:
            raise DataError(f"{path}: {len(repeated)} images have more than one row, e.g. {repeated[0]}")
        return dict(zip(ids, table["rle_mask"]))

    def rle_runs(self, image_id: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The checked runs of `image_id`'s row in train_masks.csv for an image of `shape`: the
        one parser (rle.rle_runs) and one set of checks; a bad row is an error naming file and row."""
        try:
            return rle_runs(self.rle_masks[image_id], shape[0] * shape[1])
        except RLEError as err:
            raise DataError(f"{self.root / 'train_masks.csv'}: row {image_id}.jpg ({shape[1]}x{shape[0]} image): {err}") from err

    def read_mask(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """The mask of a train image as HxW uint8 0/1, checked against the image's size."""
        if shape is None:
            shape = image_size(self.image_path(image_id))
        path = self.mask_path(image_id)
        if path.is_file():
            mask = read_mask_file(path)
            _check_mask_shape(path, mask.shape, shape)
            return mask
        if image_id in self.rle_masks:
            self.rle_runs(image_id, shape)  # checked here, so an error names the file and row
            return rle_decode(self.rle_masks[image_id], shape)
        raise self._no_mask(image_id)

    def _no_mask(self, image_id: str) -> DataError:
        return DataError(f"no mask for {self.image_path(image_id)}: neither {self.mask_path(image_id)} nor a row in train_masks.csv")

    def check_train(self, ids: list[str]) -> None:
        """Every header a training run reads, before it writes anything: each photo's (present,
        a JPEG within the pixel limit), its mask's (a GIF of the photo's size, else a well-formed
        row of train_masks.csv), then `check_mask_sources`. Nothing is decoded but that sample."""
        for image_id, shape in zip(ids, check_photos([self.image_path(i) for i in ids])):
            path = self.mask_path(image_id)
            if path.is_file():
                with open_image(path, "mask") as img:
                    _check_mask_shape(path, (img.height, img.width), shape)
            elif image_id in self.rle_masks:
                self.rle_runs(image_id, shape)
            else:
                raise self._no_mask(image_id)
        self.check_mask_sources()

    def check_mask_sources(self) -> None:
        """`train_masks/` GIFs and `train_masks.csv`, when both exist, must hold the same masks:
        training reads the GIFs, the folds' area strata read the CSV. Checked: the same ids both
        ways, and `MASK_SAMPLE` rows spread evenly over the sorted ids decoding to their GIFs (a
        fixed sample, cheap on the full data set). The first disagreement is one error naming
        the id and the file."""
        csv = self.root / "train_masks.csv"
        gifs = {p.name.removesuffix(MASK_SUFFIX): p for p in sorted((self.root / "train_masks").glob(f"*{MASK_SUFFIX}"))}
        if not gifs or not csv.is_file():
            return
        rows = self.rle_masks
        fix = "train_masks/ and train_masks.csv must hold the same masks: correct one, or move one away to use the other alone"
        without_gif, without_row = sorted(set(rows) - set(gifs)), sorted(set(gifs) - set(rows))
        if without_gif:
            raise DataError(f"{csv}: row {without_gif[0]}.jpg has no {self.mask_path(without_gif[0])} ({len(without_gif)} rows without a GIF in all): {fix}")
        if without_row:
            raise DataError(f"{gifs[without_row[0]]} has no row in {csv} ({len(without_row)} GIFs without a row in all): {fix}")
        ids = sorted(rows)
        for index in sorted(set(np.linspace(0, len(ids) - 1, min(MASK_SAMPLE, len(ids))).round().astype(int))):
            image_id = ids[index]
            gif = read_mask_file(gifs[image_id])
            self.rle_runs(image_id, gif.shape)  # a malformed row is named as such
            differ = int(np.count_nonzero(rle_decode(rows[image_id], gif.shape) != gif))
            if differ:
                raise DataError(f"{csv}: row {image_id}.jpg differs from {gifs[image_id]} in {differ:,} pixels: {fix}")

    def mask_area(self, image_id: str) -> float:
        """Fraction of foreground pixels; from train_masks.csv when it has the row (no decoding)."""
        shape = image_size(self.image_path(image_id))
        if image_id in self.rle_masks:
            starts, ends = self.rle_runs(image_id, shape)
            return float((ends - starts).sum()) / (shape[0] * shape[1])
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
        if table.empty:
            raise DataError(f"{path} lists no photos")
        repeated = table["img"][table["img"].duplicated()]
        if len(repeated):
            raise DataError(f"{path}: {repeated.iloc[0]} is listed more than once ({len(repeated)} repeated rows)")
        return table["img"].str.removesuffix(".jpg").tolist()
