"""The competition metric (mean per-image Dice) and exact threshold sweeps.

Probabilities are stored as uint8 levels (round(p * 255)); a pixel is predicted positive at
level L when its probability level is >= L, so threshold 0.5 is level 128. Counting each
image's positive and negative pixels per level (two 256-bin histograms) gives the exact Dice
at all 256 levels from one pass over the pixels.
"""

from __future__ import annotations

import numpy as np
import torch

LEVELS = 256
HALF = 128  # the level of probability 0.5


def level_histograms(prob_u8: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) pixel counts per probability level for one image."""
    positive, negative = batch_level_histograms(torch.from_numpy(np.ascontiguousarray(prob_u8))[None], torch.from_numpy(np.ascontiguousarray(mask))[None])
    return positive[0].numpy(), negative[0].numpy()


def batch_level_histograms(levels: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) pixel counts per level for a batch: (B, 256) int64 each, on the
    maps' device. `levels` (B, H, W) uint8, `truth` (B, H, W) nonzero = car."""
    batch = len(levels)
    bins = levels.reshape(batch, -1).long() + LEVELS * (truth.reshape(batch, -1) != 0).long()
    bins += 2 * LEVELS * torch.arange(batch, device=levels.device)[:, None]
    counts = torch.bincount(bins.reshape(-1), minlength=2 * LEVELS * batch).reshape(batch, 2, LEVELS)
    return counts[:, 1], counts[:, 0]


def dice_by_level(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Per-image Dice at every level: (n_images, 256) from (n_images, 256) histograms.

    An image with no foreground predicted and none true scores 1, as on the leaderboard.
    """
    positive, negative = np.atleast_2d(positive), np.atleast_2d(negative)
    tp = positive[:, ::-1].cumsum(axis=1)[:, ::-1]  # positives at level >= L
    fp = negative[:, ::-1].cumsum(axis=1)[:, ::-1]
    fn = positive.sum(axis=1, keepdims=True) - tp
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator == 0, 1.0, 2 * tp / denominator)


def dice_per_image(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each binary prediction in a batch (N, H, W) against its truth; empty-empty = 1."""
    pred = pred.reshape(len(pred), -1).astype(bool)
    truth = truth.reshape(len(truth), -1).astype(bool)
    tp = (pred & truth).sum(axis=1)
    denominator = pred.sum(axis=1) + truth.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator == 0, 1.0, 2 * tp / denominator)
