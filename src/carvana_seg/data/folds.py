"""Grouped, area-stratified K folds, made once and reused: OOF predictions depend on them.

All photos of one car go to one fold (the 16 angles of a car are near-duplicates, so a
per-image split leaks). Cars are stratified by their mean mask area where there are
enough cars per stratum, so every fold sees small and large cars alike.

A group is what `data.groups` says: by default the car (`data.group_regex` on the id), or a
column of a metadata table, or each image alone (with a warning: views of one object in two
folds inflate CV). Where some masks are empty, the groups that are mostly empty are a stratum
of their own, so every fold gets its share of them.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from tqdm.auto import tqdm

from carvana_seg.config import DataConfig
from carvana_seg.data.layout import PHOTOS_PER_CAR, CarvanaLayout, DataError, split_id
from carvana_seg.data.layouts import strip_suffix
from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_path, writable

MAX_AREA_BINS = 4


class FoldsError(PipelineError):
    """The folds file is missing, inconsistent with the data, or would be overwritten."""


def incomplete_cars(ids: list[str]) -> dict[str, int]:
    """{car: photos} of the cars with fewer than the 16 photos Carvana shoots of every car.

    Why: an interrupted copy or generation leaves cars with some of their angles; the folds
    are still valid, but the user should know before training on them.
    """
    counts = pd.Series([split_id(i)[0] for i in ids]).value_counts()
    return {car: int(n) for car, n in sorted(counts.items()) if n < PHOTOS_PER_CAR}


def image_groups(layout, ids: list[str], data: DataConfig | None = None) -> list[str]:
    """The fold group of each id (`data.groups`); without `data`, Carvana's car of `<car>_<NN>`."""
    if data is None:
        return [split_id(i)[0] for i in ids]
    if data.groups == "none":
        warnings.warn("data.groups=none: each image is its own group; if several images show one object, "
                      "folds that split them leak and CV is inflated", stacklevel=2)
        return list(ids)
    if data.groups == "column":
        return _column_groups(Path(layout.root) / data.metadata_csv, ids, data.id_column, data.group_column)
    try:
        pattern = re.compile(data.group_regex)
    except re.error as err:
        raise DataError(f"data.group_regex {data.group_regex!r}: not a regular expression ({err})") from err
    if "group" not in pattern.groupindex:
        raise DataError(f"data.group_regex {data.group_regex!r}: needs a named group (?P<group>...) holding the group")
    groups = []
    for image_id in ids:
        match = pattern.match(image_id)
        if not match:
            raise DataError(f"image {image_id!r} does not match data.group_regex {data.group_regex!r}: fix the regex, or set data.groups")
        groups.append(match["group"])
    return groups


def _column_groups(path: Path, ids: list[str], id_column: str, group_column: str) -> list[str]:
    """Each id's group from a metadata table; an id without a row is an error naming it."""
    if not path.is_file():
        raise DataError(f"{path} is missing: data.groups=column reads the groups there (data.metadata_csv)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in (id_column, group_column):
        if column not in table.columns:
            raise DataError(f"{path}: no column {column!r} (columns {list(table.columns)}): set data.id_column / data.group_column")
    group_of = dict(zip(table[id_column].map(strip_suffix), table[group_column]))
    missing = [i for i in ids if not group_of.get(i)]
    if missing:
        raise DataError(f"{path}: no {group_column!r} for image {missing[0]} ({len(missing)} images without a group in all)")
    return [group_of[i] for i in ids]


def strata(areas: pd.Series, groups: list[str], n_folds: int) -> np.ndarray | None:
    """Each image's stratum (its group's), or None for plain grouping: as many bins of mean mask
    area as keep at least `n_folds` groups in each; groups mostly of empty masks are one stratum
    of their own."""
    group_area = areas.groupby(groups).mean()
    n_groups = len(group_area)
    if not (areas == 0).any():
        n_bins = min(MAX_AREA_BINS, n_groups // n_folds)
        if n_bins < 2:
            return None
        group_bin = pd.qcut(group_area.rank(method="first"), n_bins, labels=False)
        return np.array([group_bin[g] for g in groups])
    empty = (areas == 0).groupby(groups).mean() >= 0.5
    full = group_area[~empty]
    n_bins = min(MAX_AREA_BINS, len(full) // n_folds)
    group_bin = pd.Series(-1, index=group_area.index)
    if n_bins >= 2:
        group_bin[full.index] = pd.qcut(full.rank(method="first"), n_bins, labels=False)
    else:
        group_bin[full.index] = 0
    labels = np.array([group_bin[g] for g in groups])
    return labels if len(set(labels.tolist())) >= 2 else None


def make_folds(layout: CarvanaLayout, n_folds: int, seed: int, data: DataConfig | None = None) -> pd.DataFrame:
    """Assign each train image a fold: columns img, car (its group), fold (sorted by img).
    `data` says how images are grouped (`image_groups`); without it, by Carvana's car."""
    ids = layout.train_ids
    layout.check_mask_sources()  # the strata read train_masks.csv where training reads the GIFs
    cars = image_groups(layout, ids, data)
    n_cars = len(set(cars))
    if n_folds < 2 or n_folds > n_cars:
        raise FoldsError(f"{n_folds} folds need 2 <= folds <= number of groups ({n_cars}) in {layout.root}")
    areas = pd.Series([layout.mask_area(i) for i in tqdm(ids, desc="mask areas", leave=False, disable=None)], index=ids)
    labels = strata(areas, cars, n_folds)
    if labels is not None:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        splitter, labels = GroupKFold(n_splits=n_folds), np.zeros(len(ids))
    fold = np.empty(len(ids), dtype=np.int64)
    for k, (_, val) in enumerate(splitter.split(np.zeros(len(ids)), labels, groups=cars)):
        fold[val] = k
    return pd.DataFrame({"img": ids, "car": cars, "fold": fold})


def write_folds(folds: pd.DataFrame, path: str | Path, force: bool = False) -> bool:
    """Write the folds file; refuse to replace a different existing one unless `force`.

    Returns True when the file was written, False when an identical file already existed.
    """
    path = Path(path)
    if path.parent.is_dir() and not writable(path.parent):
        raise FoldsError(f"{path.parent} is read-only: write the folds elsewhere with data.folds_file=input/folds/<name>.csv")
    if path.is_file():
        existing = pd.read_csv(path)
        if existing.equals(folds):
            return False
        if not force:
            raise FoldsError(
                f"{path} exists with a different split; OOF predictions made with it would no longer "
                "match. Pass --force to replace it (then retrain every experiment)."
            )
    with atomic_path(path) as tmp:
        folds.to_csv(tmp, index=False)
    return True


def read_folds(path: str | Path, layout: CarvanaLayout, n_folds: int) -> pd.DataFrame:
    """Read a folds file and check it covers exactly the dataset's train images."""
    path = Path(path)
    if not path.is_file():
        raise FoldsError(f"{path} not found: run `python scripts/make_folds.py --config ...` first")
    folds = pd.read_csv(path, dtype={"img": str, "car": str})
    if list(folds.columns) != ["img", "car", "fold"]:
        raise FoldsError(f"{path}: columns {list(folds.columns)}, expected ['img', 'car', 'fold']")
    if sorted(folds["fold"].unique().tolist()) != list(range(n_folds)):
        found = sorted(folds["fold"].unique().tolist())
        raise FoldsError(
            f"{path} has folds {found}, config asks for {n_folds}: pass data.folds={len(found)} to use this file, "
            f"or data.folds_file=<another file> for a {n_folds}-fold split (scripts/make_folds.py writes it)"
        )
    missing = sorted(set(layout.train_ids) - set(folds["img"]))
    extra = sorted(set(folds["img"]) - set(layout.train_ids))
    if missing or extra:
        raise FoldsError(f"{path} does not match {layout.root / 'train'}: missing {missing[:5]}, unknown {extra[:5]}")
    if (folds.groupby("car")["fold"].nunique() > 1).any():
        raise DataError(f"{path}: a car appears in two folds")
    return folds.sort_values("img").reset_index(drop=True)
