"""Out-of-fold predictions: stored at training resolution, scored at the original size.

The leaderboard scores full-size masks, so OOF probabilities are upsampled to each image's
original size before thresholding; the per-image level histograms computed there give the
exact Dice at every threshold (see metrics.py) for tuning without another pass.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from carvana_seg.core.metrics import level_histograms
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.io_utils import atomic_path


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
    """Bilinear resizing of uint8 probability levels to (height, width)."""
    if prob_u8.shape == tuple(size):
        return prob_u8
    return cv2.resize(prob_u8, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def blend_upsampled(levels: list[np.ndarray], weights: list[float], size: tuple[int, int]) -> np.ndarray:
    """Weighted mean of several models' uint8 levels, each upsampled to `size`, as uint8 levels."""
    acc = np.zeros(size, dtype=np.float32)
    for prob_u8, weight in zip(levels, weights):
        if weight:
            acc += weight * upsample_probs(prob_u8, size).astype(np.float32)
    return np.rint(acc / sum(weights)).astype(np.uint8)


def original_size_histograms(
    ids: np.ndarray, sizes: np.ndarray, probs_at: Callable[[int, tuple[int, int]], np.ndarray], layout: CarvanaLayout, workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (positive, negative) level histograms at original resolution: (N, 256) each.

    `probs_at(i, size)` gives image i's uint8 probability levels at its original size.
    """

    def one(i: int) -> tuple[np.ndarray, np.ndarray]:
        size = (int(sizes[i][0]), int(sizes[i][1]))
        return level_histograms(probs_at(i, size), layout.read_mask(str(ids[i]), size))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        pairs = list(tqdm(pool.map(one, range(len(ids))), total=len(ids), desc="scoring at original size", leave=False))
    return np.stack([p for p, _ in pairs]), np.stack([n for _, n in pairs])


def oof_histograms(oof: OOF, layout: CarvanaLayout, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Original-resolution histograms of one OOF set."""
    return original_size_histograms(oof.ids, oof.original_sizes, lambda i, size: upsample_probs(oof.probs[i], size), layout, workers)
