"""Out-of-fold predictions: stored at training resolution, scored at the original size.

The leaderboard scores full-size masks, so OOF probabilities are upsampled to each image's
original size (by the recipe chain, recipe/chain.py) before thresholding; the per-image level
histograms computed there give the exact Dice at every threshold (ops/metrics.py) for tuning
without another pass. Scoring
runs in batches of same-size images on the maps' device; loader workers read the truth
masks (and the photos, when a recipe refines edges) while the device works.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from carvana_seg.ops.metrics import batch_level_histograms
from carvana_seg.data.photos import same_size_batches
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.config import Config
from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_path

SCORE_BATCH = 8  # images per scoring batch (a 1918x1280 batch of 8 is ~100 MB of float maps)


@dataclass
class OOF:
    """Validation probabilities of one or more folds (uint8 levels at training resolution)."""

    ids: np.ndarray  # (N,) image ids
    probs: np.ndarray  # (N, h, w) uint8
    original_sizes: np.ndarray  # (N, 2) height, width

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, ids=self.ids.astype(str), probs=self.probs, original_sizes=self.original_sizes)

    @classmethod
    def load(cls, path: str | Path) -> OOF:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["ids"], data["probs"], data["original_sizes"])


@dataclass
class ExperimentOOF:
    """One experiment's OOF over the whole training set, sorted by image id, with the config
    that trained it: what tuning blends and the leaderboard ranks. Not a recipe member (that
    is a name, a weight and a fold count: recipe/recipe.Member); this is the data behind one."""

    exp: str
    cfg: Config
    oof: OOF


def check_complete(exp: str, ids: list[str], expected: list[str]) -> None:
    """Every training image exactly once across the folds; otherwise name the culprits."""
    counts = Counter(ids)
    duplicated = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(set(expected) - set(counts))
    unknown = sorted(set(counts) - set(expected))
    if duplicated or missing or unknown:
        problems = [
            f"{label} {len(found)} ({', '.join(found[:8])}{', ...' if len(found) > 8 else ''})"
            for label, found in (("missing", missing), ("duplicated", duplicated), ("unknown", unknown))
            if found
        ]
        raise PipelineError(f"OOF of experiment {exp!r} is not one prediction per training image: {'; '.join(problems)}")


# (indices of one same-size batch, its original size, its grey photos or None) -> (B, H, W) uint8 levels
LevelsFn = Callable[[np.ndarray, tuple[int, int], torch.Tensor | None], torch.Tensor]


class _TruthAndGuides(Dataset):
    def __init__(self, oof: OOF, layout: CarvanaLayout, with_guides: bool):
        self.oof, self.layout, self.with_guides = oof, layout, with_guides

    def __len__(self) -> int:
        return len(self.oof.ids)

    def __getitem__(self, i: int) -> dict:
        image_id, size = str(self.oof.ids[i]), tuple(int(v) for v in self.oof.original_sizes[i])
        item = {"i": i, "truth": torch.from_numpy(np.require(self.layout.read_mask(image_id, size), requirements=["C", "W"]))}
        if self.with_guides:
            item["guide"] = torch.from_numpy(self.layout.read_guide(self.layout.image_path(image_id)))
        return item


def original_size_batches(
    oof: OOF, layout: CarvanaLayout, with_guides: bool = False, device: torch.device | None = None, batch_size: int = SCORE_BATCH, workers: int = 2, desc: str = "scoring at original size"
) -> Iterator[tuple[np.ndarray, tuple[int, int], torch.Tensor, torch.Tensor | None]]:
    """(indices, size, truth masks, grey photos or None) for every OOF image, in same-size batches on `device`."""
    device = device or torch.device("cpu")
    batches = list(same_size_batches(oof.original_sizes, range(len(oof.ids)), batch_size))
    loader = DataLoader(_TruthAndGuides(oof, layout, with_guides), batch_sampler=batches, num_workers=workers)
    with tqdm(total=len(oof.ids), desc=desc, leave=False, disable=None) as bar:  # None: no bar outside a terminal
        for batch in loader:
            indices = batch["i"].numpy()
            size = tuple(int(v) for v in oof.original_sizes[indices[0]])
            guide = batch["guide"].to(device, non_blocking=True) if with_guides else None
            yield indices, size, batch["truth"].to(device, non_blocking=True), guide
            bar.update(len(indices))


def original_size_histograms(
    oof: OOF, layout: CarvanaLayout, levels_fn: LevelsFn, with_guides: bool = False, device: torch.device | None = None, workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (positive, negative) level histograms at original resolution: (N, 256) each.

    `levels_fn` gives a batch's levels at its original size: the recipe chain's
    (recipe/chain.oof_histograms), the one way OOF maps reach the photos' size.
    """
    device = device or torch.device("cpu")
    positive = np.zeros((len(oof.ids), 256), dtype=np.int64)
    negative = np.zeros_like(positive)
    for indices, size, truth, guide in original_size_batches(oof, layout, with_guides, device, workers=workers):
        pos, neg = batch_level_histograms(levels_fn(indices, size, guide), truth)
        positive[indices], negative[indices] = pos.cpu().numpy(), neg.cpu().numpy()
    return positive, negative
