"""Intervals over cars: the bootstrap that resamples whole groups of photos.

The 16 photos of a car are not 16 independent trials (one hard studio or paint job moves
them all), so an interval of a mean Dice resamples cars, not photos. Tuning uses it for the
nested CV's interval, the leaderboard for its CV intervals and paired verdicts.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


def paired_bootstrap(diffs: np.ndarray, groups: np.ndarray | None = None, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """Mean of per-image values (paired differences, or scores themselves) and its 95% percentile interval.

    With `groups` (e.g. car ids) whole groups are resampled: the 16 photos of a car are not
    16 independent trials, and resampling them one by one would make the interval too narrow.
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = rng.integers(0, len(diffs), (samples, len(diffs)))
        means = diffs[draws].mean(axis=1)
    else:
        labels, inverse = np.unique(groups, return_inverse=True)
        sums, counts = np.bincount(inverse, weights=diffs), np.bincount(inverse)
        draws = rng.integers(0, len(labels), (samples, len(labels)))
        means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diffs.mean()), float(low), float(high)
