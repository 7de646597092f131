"""The competition's run-length encoding: 1-indexed `start length` pairs over the mask
flattened row-major (C order). Encoding the official GIFs gives the official rows byte for byte.
"""

from __future__ import annotations

import numpy as np

from carvana_seg.errors import PipelineError


class RLEError(PipelineError):
    """An RLE string is malformed: odd count, non-integers, unsorted or overlapping runs, out of bounds."""


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (nonzero = foreground) as the competition's RLE string."""
    flat = np.ascontiguousarray(mask).reshape(-1)
    if flat.dtype != np.bool_:
        flat = flat != 0
    # Positions where the value changes; a run starts at each 0->1 and ends at each 1->0.
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if flat.size and flat[0]:
        edges = np.concatenate(([0], edges))
    if flat.size and flat[-1]:
        edges = np.concatenate((edges, [flat.size]))
    edges[1::2] -= edges[::2]  # run ends -> run lengths
    edges[::2] += 1  # 0-indexed starts -> 1-indexed
    return " ".join(map(str, edges.tolist()))


def rle_runs(rle: str, num_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate an RLE string; return 0-indexed run starts and (exclusive) ends."""
    if not isinstance(rle, str):
        raise RLEError(f"RLE must be a string, got {type(rle).__name__}")
    text = rle.strip()
    if not text:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    tokens = text.split()
    try:
        numbers = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError) as err:
        bad = next((t for t in tokens if not t.isdigit() or len(t) > 18), tokens[0])
        raise RLEError(f"RLE holds a token that is not an integer (or too large): {bad[:20]!r}") from err
    if numbers.size % 2:
        raise RLEError(f"RLE has an odd number of values ({numbers.size}): expected start/length pairs")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    ends = starts + lengths
    if (starts < 0).any():
        raise RLEError("RLE start below 1 (starts are 1-indexed)")
    if (lengths <= 0).any():
        raise RLEError("RLE run length must be positive")
    if (np.diff(starts) <= 0).any():
        raise RLEError("RLE starts must be strictly increasing")
    if (starts[1:] < ends[:-1]).any():
        raise RLEError("RLE runs overlap")
    if ends[-1] > num_pixels:
        raise RLEError(f"RLE run ends at pixel {int(ends[-1])} beyond the mask's {num_pixels} pixels")
    return starts, ends


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode an RLE string into a uint8 0/1 mask of `shape` (height, width)."""
    height, width = shape
    num_pixels = height * width
    starts, ends = rle_runs(rle, num_pixels)
    # Alternate background and foreground segments: 0..start1, start1..end1, end1..start2, ...
    bounds = np.empty(2 * len(starts) + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, num_pixels
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    values = np.zeros(len(bounds) - 1, dtype=np.uint8)
    values[1::2] = 1
    return np.repeat(values, np.diff(bounds)).reshape(height, width)
