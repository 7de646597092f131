"""The three data layouts `data.layout` names, behind one interface.

    carvana   train/<car>_<NN>.jpg, train_masks/<id>_mask.gif or train_masks.csv (data/layout.py)
    folders   <train_dir>/<id>.<ext> and <mask_dir>/<id>.<ext> with matching stems, <test_dir>/
    csv       <train_dir>/<id>.<ext> and <masks_csv> with an id column and an RLE column

The folders and csv layouts read PNG, TIFF, BMP and JPEG images, grey or RGB, 8- or 16-bit
grey; each is scaled to uint8 by `data.intensity_range` (by default the file's full range:
0-255 for 8 bits, 0-65535 for 16), so the cache, augmentation and models see one kind of
input. Masks are PNG, GIF, TIFF or BMP files holding 0/1, 0/255 or a palette's 0/1 indices.
The RLE conventions (pixel order, first index, empty text) are `data.rle_*` (ops/rle.py
RleFormat), used both to read training masks and to write the submission. Every bad file or
row is one DataError naming it, as in the Carvana layout: an image without a mask, a mask or
row without an image, two files of one stem, an unreadable file, a mode that is neither grey
nor RGB, images of different channel counts, a malformed RLE row.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from carvana_seg.config import Config, ConfigError, DataConfig
from carvana_seg.data.layout import CarvanaLayout, DataError, open_image, read_mask_file
from carvana_seg.ops.rle import RLEError, RleFormat

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png", ".gif", ".tif", ".tiff", ".bmp")
GREY_MODES = ("L", "I;16", "I;16L", "I;16B", "I")  # PIL's names for 8- and 16-bit grey
SIXTEEN_BIT_MODES = GREY_MODES[1:]
FULL_RANGE = {False: (0, 255), True: (0, 65535)}  # keyed by "is 16-bit"


def parse_range(text: str) -> tuple[float, float] | None:
    """`data.intensity_range` `LO-HI` -> (lo, hi); None for "" (each file's full range)."""
    if not text.strip():
        return None
    lo, sep, hi = text.strip().partition("-")
    try:
        low, high = float(lo), float(hi)
    except ValueError:
        low = high = 0.0
    if not sep or not high > low >= 0:
        raise DataError(f"data.intensity_range: expected LO-HI with 0 <= LO < HI (e.g. 0-4095), got {text!r}")
    return low, high


def strip_suffix(name: str) -> str:
    """An id as a table spells it, less an image file extension if it has one."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else name


class FileLayout:
    """What the folders and csv layouts share: images in folders of any image format, test ids
    from the sample submission, the RLE format and the intensity range of the config."""

    kind = ""

    def __init__(self, data: DataConfig, root: str | Path | None = None):
        self.data, self.root = data, Path(root if root is not None else data.root)
        if not self.root.is_dir():
            raise DataError(f"dataset root {self.root} does not exist")
        self.rle_format = RleFormat.of(data)
        self.intensity = parse_range(data.intensity_range)
        self._listed: dict[Path, dict[str, Path]] = {}

    # ---- files -----------------------------------------------------------------------
    def listing(self, folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
        """{stem: path} of the files of `folder` with one of `suffixes` (any case); two files of
        one stem are an error naming both; a file of another kind is an error naming it."""
        if folder not in self._listed:
            found: dict[str, Path] = {}
            for path in sorted(folder.iterdir()) if folder.is_dir() else ():
                if path.name.startswith(".") or path.is_dir():
                    continue
                if path.suffix.lower() not in suffixes:
                    raise DataError(f"{path}: not {'an' if what == 'image' else 'a'} {what} file ({', '.join(suffixes)}): move it out of {folder}")
                if path.stem in found:
                    raise DataError(f"{found[path.stem]} and {path} are two {what}s of one id: keep one")
                found[path.stem] = path
            self._listed[folder] = found
        return self._listed[folder]

    def folder(self, split: str) -> Path:
        return self.root / (self.data.train_dir if split == "train" else self.data.test_dir)

    def photos(self, split: str) -> dict[str, Path]:
        return self.listing(self.folder(split), IMAGE_SUFFIXES, "image")

    @cached_property
    def train_ids(self) -> list[str]:
        folder = self.folder("train")
        if not folder.is_dir():
            raise DataError(f"{folder} is missing: the {self.kind} layout reads its training images there (data.train_dir)")
        ids = sorted(self.photos("train"))
        if not ids:
            raise DataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return ids

    def image_path(self, image_id: str, split: str = "train") -> Path:
        return self.photos(split).get(image_id, self.folder(split) / f"{image_id}.png")

    # ---- images ----------------------------------------------------------------------
    @staticmethod
    def mode_channels(mode: str, path: Path) -> int:
        if mode in GREY_MODES:
            return 1
        if mode == "RGB":
            return 3
        raise DataError(f"image {path}: mode {mode!r}, expected grey (8- or 16-bit) or RGB: convert it")

    def photo_size(self, path: Path) -> tuple[int, int]:
        with open_image(path) as img:
            self.mode_channels(img.mode, path)
            return img.height, img.width

    @cached_property
    def first_image(self) -> Path:
        """The image whose channels every other must have: the first training image, or the
        first test image where there are no training images (a prediction-only folder)."""
        found = self.photos("train") or self.photos("test")
        if not found:
            raise DataError(f"{self.folder('train')} and {self.folder('test')} hold no images ({', '.join(IMAGE_SUFFIXES)})")
        return found[min(found)]

    @cached_property
    def channels(self) -> int:
        """1 (grey) or 3 (RGB): the first image's; `check_photos` holds the others to it."""
        with open_image(self.first_image) as img:
            return self.mode_channels(img.mode, self.first_image)

    def check_photos(self, paths: list[Path]) -> list[tuple[int, int]]:
        """Every image's header: present, readable, within the pixel limit, grey or RGB like the
        first training image. Returns each (height, width)."""
        sizes = []
        for path in paths:
            if not path.is_file():
                raise DataError(f"image {path} is missing")
            with open_image(path) as img:
                channels = self.mode_channels(img.mode, path)
                if channels != self.channels:
                    raise DataError(f"image {path} has {channels} channel(s), {self.first_image} has {self.channels}: make them alike")
                sizes.append((img.height, img.width))
        return sizes

    def read_photo(self, path: Path, draft_size: tuple[int, int] | None = None) -> np.ndarray:
        """HxWxC uint8 (C = `channels`), scaled from `data.intensity_range` (or the full range)."""
        with open_image(path) as img:
            channels = self.mode_channels(img.mode, path)
            if draft_size is not None and img.format == "JPEG":
                img.draft("RGB" if channels == 3 else "L", draft_size)
            values = np.asarray(img)
            sixteen = img.mode in SIXTEEN_BIT_MODES
        if channels != self.channels:
            raise DataError(f"image {path} has {channels} channel(s), {self.first_image} has {self.channels}: make them alike")
        if self.intensity is not None or sixteen:
            low, high = self.intensity or FULL_RANGE[sixteen]
            values = np.clip((values.astype(np.float32) - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)
        values = np.ascontiguousarray(values, dtype=np.uint8)
        return values[..., None] if values.ndim == 2 else values

    def read_guide(self, path: Path) -> np.ndarray:
        """The image as uint8 grey levels (the edge refinement's guide)."""
        image = self.read_photo(path)
        return np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))

    @property
    def cache_tag(self) -> str:
        """The settings a resized cache depends on beyond its files' sizes and times."""
        keys = ("layout", "train_dir", "mask_dir", "masks_csv", "id_column", "rle_column", "rle_order", "rle_start", "rle_empty", "intensity_range")
        return json.dumps({k: getattr(self.data, k) for k in keys})

    # ---- masks -----------------------------------------------------------------------
    def read_mask(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        raise NotImplementedError

    def check_mask_sources(self) -> None:
        """One source of masks per layout: nothing to compare."""

    def mask_area(self, image_id: str) -> float:
        return float(self.read_mask(image_id).mean())

    # ---- test ------------------------------------------------------------------------
    @property
    def sample_path(self) -> Path:
        return self.root / "sample_submission.csv"

    @cached_property
    def sample(self) -> pd.DataFrame:
        """The sample submission: its two columns, its ids as spelled, in order."""
        path = self.sample_path
        if not path.is_file():
            raise DataError(f"{path} is missing: it defines the test set, the submission's header, id spelling and row order")
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if len(table.columns) != 2:
            raise DataError(f"{path}: columns {list(table.columns)}, expected two (an id column and an RLE column)")
        if table.empty:
            raise DataError(f"{path} lists no images")
        names = table.iloc[:, 0]
        repeated = names[names.map(strip_suffix).duplicated()]
        if len(repeated):
            raise DataError(f"{path}: {repeated.iloc[0]} is listed more than once ({len(repeated)} repeated rows)")
        return table

    @property
    def submission_header(self) -> list[str]:
        return list(self.sample.columns)

    @property
    def submission_names(self) -> list[str]:
        return self.sample.iloc[:, 0].tolist()

    @property
    def test_ids(self) -> list[str]:
        return [strip_suffix(name) for name in self.submission_names]


class FoldersLayout(FileLayout):
    """Images in `data.train_dir`, one mask per image of the same stem in `data.mask_dir`."""

    kind = "folders"

    @property
    def mask_folder(self) -> Path:
        return self.root / self.data.mask_dir

    def mask_path(self, image_id: str) -> Path:
        return self.listing(self.mask_folder, MASK_SUFFIXES, "mask").get(image_id, self.mask_folder / f"{image_id}.png")

    def read_mask(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        shape = shape or self.photo_size(self.image_path(image_id))
        path = self.mask_path(image_id)
        if not path.is_file():
            raise DataError(f"no mask for {self.image_path(image_id)}: {path} (any of {', '.join(MASK_SUFFIXES)}) is missing")
        mask = read_mask_file(path)
        if mask.shape != tuple(shape):
            raise DataError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}")
        return mask

    def check_train(self, ids: list[str]) -> None:
        """Every image's header and every mask's (present, the image's size); a mask without an
        image is an error too (it would be silently left out)."""
        masks = self.listing(self.mask_folder, MASK_SUFFIXES, "mask")
        orphans = sorted(set(masks) - set(self.train_ids))
        if orphans:
            raise DataError(f"mask {masks[orphans[0]]} has no image in {self.folder('train')} ({len(orphans)} masks without an image in all)")
        for image_id, shape in zip(ids, self.check_photos([self.image_path(i) for i in ids])):
            path = self.mask_path(image_id)
            if not path.is_file():
                raise DataError(f"no mask for {self.image_path(image_id)}: {path} (any of {', '.join(MASK_SUFFIXES)}) is missing")
            with open_image(path, "mask") as img:
                if (img.height, img.width) != tuple(shape):
                    raise DataError(f"mask {path} is {img.width}x{img.height} but its image is {shape[1]}x{shape[0]}")

    def source_files(self, ids: list[str], split: str) -> list[Path]:
        files = [self.image_path(i, split) for i in ids]
        return files + [self.mask_path(i) for i in ids] if split == "train" else files


class CsvLayout(FileLayout):
    """Images in `data.train_dir`, masks as RLE rows of `data.masks_csv` (`data.id_column`,
    `data.rle_column`); an empty cell is an empty mask."""

    kind = "csv"

    @property
    def csv_path(self) -> Path:
        return self.root / self.data.masks_csv

    @cached_property
    def rle_masks(self) -> dict[str, str]:
        path, id_column, rle_column = self.csv_path, self.data.id_column, self.data.rle_column
        if not path.is_file():
            raise DataError(f"{path} is missing: the csv layout reads the training masks there (data.masks_csv)")
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in (id_column, rle_column) if c not in table.columns]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (columns {list(table.columns)}): set data.id_column / data.rle_column")
        ids = table[id_column].map(strip_suffix)
        repeated = ids[ids.duplicated()].tolist()
        if repeated:
            raise DataError(f"{path}: {len(repeated)} images have more than one row, e.g. {repeated[0]}")
        return dict(zip(ids, table[rle_column]))

    def mask_path(self, image_id: str) -> Path:
        return self.csv_path

    def rle_runs(self, image_id: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The checked runs of `image_id`'s row; a bad or missing row is an error naming file and row."""
        if image_id not in self.rle_masks:
            raise DataError(f"no mask for {self.image_path(image_id)}: no row {image_id!r} in {self.csv_path}")
        try:
            return self.rle_format.runs(self.rle_masks[image_id], shape)
        except RLEError as err:
            raise DataError(f"{self.csv_path}: row {image_id} ({shape[1]}x{shape[0]} image): {err}") from err

    def read_mask(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        shape = shape or self.photo_size(self.image_path(image_id))
        return self.rle_format.mask(*self.rle_runs(image_id, shape), shape)

    def mask_area(self, image_id: str) -> float:
        shape = self.photo_size(self.image_path(image_id))
        starts, ends = self.rle_runs(image_id, shape)
        return float((ends - starts).sum()) / (shape[0] * shape[1])

    def check_train(self, ids: list[str]) -> None:
        """Every image's header and every row (present, well formed for its image's size); a row
        without an image is an error too."""
        orphans = sorted(set(self.rle_masks) - set(self.train_ids))
        if orphans:
            raise DataError(f"{self.csv_path}: row {orphans[0]} has no image in {self.folder('train')} ({len(orphans)} rows without an image in all)")
        for image_id, shape in zip(ids, self.check_photos([self.image_path(i) for i in ids])):
            self.rle_runs(image_id, shape)

    def source_files(self, ids: list[str], split: str) -> list[Path]:
        files = [self.image_path(i, split) for i in ids]
        return files + [self.csv_path] if split == "train" else files


LAYOUTS = {"folders": FoldersLayout, "csv": CsvLayout}
Layout = CarvanaLayout | FileLayout  # what `open_layout` returns: one interface, whichever layout


def with_data_channels(cfg: Config, layout: Layout) -> Config:
    """`cfg` with `model.in_channels` the data's (1 grey, 3 RGB) where it is 0; a number set
    that differs from the data's is refused, naming the key (the network could not read it)."""
    if cfg.model.in_channels == 0:
        return replace(cfg, model=replace(cfg.model, in_channels=layout.channels))
    if cfg.model.in_channels != layout.channels:
        kind = "grey (1 channel)" if layout.channels == 1 else f"{layout.channels}-channel"
        raise ConfigError(f"model.in_channels={cfg.model.in_channels}, but the images of {layout.root} are {kind}: set model.in_channels={layout.channels} or 0 (the data's)")
    return cfg


def open_layout(data: DataConfig, root: str | Path | None = None) -> Layout:
    """The layout `data.layout` names, on `root` (default `data.root`)."""
    root = root if root is not None else data.root
    if data.layout == "carvana":
        return CarvanaLayout(Path(root))
    if data.layout not in LAYOUTS:
        raise DataError(f"data.layout: {data.layout!r} is not one of carvana, {', '.join(LAYOUTS)}")
    return LAYOUTS[data.layout](data, root)
