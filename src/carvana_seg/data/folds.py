"""Grouped, area-stratified K folds, made once and reused: OOF predictions depend on them.

All photos of one car go to one fold (the 16 angles of a car are near-duplicates, so a
per-image split leaks). Cars are stratified by their mean mask area where there are
enough cars per stratum, so every fold sees small and large cars alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from tqdm.auto import tqdm

from carvana_seg.data.layout import PHOTOS_PER_CAR, CarvanaLayout, DataError, split_id
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


def make_folds(layout: CarvanaLayout, n_folds: int, seed: int) -> pd.DataFrame:
    """Assign each train image a fold: columns img, car, fold (sorted by img)."""
    ids = layout.train_ids
    layout.check_mask_sources()  # the strata read train_masks.csv where training reads the GIFs
    cars = [split_id(i)[0] for i in ids]
    n_cars = len(set(cars))
    if n_folds < 2 or n_folds > n_cars:
        raise FoldsError(f"{n_folds} folds need 2 <= folds <= number of cars ({n_cars}) in {layout.root}")
    areas = pd.Series([layout.mask_area(i) for i in tqdm(ids, desc="mask areas", leave=False, disable=None)], index=ids)
    car_area = areas.groupby(cars).mean()

    # As many area strata as keep at least n_folds cars in each (1 stratum = plain grouping).
    n_bins = min(MAX_AREA_BINS, n_cars // n_folds)
    if n_bins >= 2:
        car_bin = pd.qcut(car_area.rank(method="first"), n_bins, labels=False)
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        labels = np.array([car_bin[c] for c in cars])
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
