"""Out-of-fold predictions: stored at training resolution, scored at the original size.

The leaderboard scores full-size masks, so OOF probabilities are upsampled to each image's
original size before thresholding; the per-image level histograms computed there give the
exact Dice at every threshold (see metrics.py) for tuning without another pass.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.io_utils import atomic_path
from carvana_seg.training.metrics import level_histograms


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


def upsample_probs(prob_u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of uint8 probability levels to (height, width)."""
    if prob_u8.shape == tuple(size):
        return prob_u8
    return cv2.resize(prob_u8, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def original_size_histograms(oof: OOF, layout: CarvanaLayout, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (positive, negative) level histograms at original resolution: (N, 256) each."""

    def one(i: int) -> tuple[np.ndarray, np.ndarray]:
        size = tuple(int(s) for s in oof.original_sizes[i])
        mask = layout.read_mask(str(oof.ids[i]), size)
        return level_histograms(upsample_probs(oof.probs[i], size), mask)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        pairs = list(tqdm(pool.map(one, range(len(oof.ids))), total=len(oof.ids), desc="scoring at original size", leave=False))
    return np.stack([p for p, _ in pairs]), np.stack([n for _, n in pairs])
