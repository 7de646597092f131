"""Masks as runs and the competition's run-length encoding, one codec.

The competition's RLE is 1-indexed `start length` pairs over the mask flattened row-major
(C order); encoding the official GIFs gives the official rows byte for byte. Other
competitions' conventions (column-major order, 0-indexed starts, a text for an empty mask) are
an `RleFormat`, whose default is Carvana's and writes the same bytes.

Masks as runs: each row's maximal stretches of foreground pixels.

A thresholded Carvana mask holds 2.4 million pixels but only a few thousand runs (a car's
outline crosses each row a few times). Post-processing and the RLE writer work on the
runs, so after the threshold nothing touches every pixel again: connected components are
runs that touch in adjacent rows (a sparse graph, labelled by scipy), a hole is a
background run group that never reaches the border, and the competition's RLE is the
runs in flattened order. From a GPU only the run boundaries travel to the host.

The components are exactly OpenCV's 8-connected components of the full mask, and the RLE
exactly the pixel writer's string (tests/test_runs.py, random and real masks). Components
are numbered in the raster order of their first pixel (OpenCV's numbering follows its 2x2
block scan), which decides only an exact tie for the largest component.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from carvana_seg.errors import PipelineError
from carvana_seg.ops.kernels import run_bounds



class RLEError(PipelineError):
    """An RLE string is malformed: odd count, non-integers, unsorted or overlapping runs, out of bounds."""


def rle_runs(rle: str, num_pixels: int, first: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate an RLE string whose first pixel is numbered `first` (1: Carvana's);
    return 0-indexed run starts and (exclusive) ends."""
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
    starts, lengths = numbers[0::2] - first, numbers[1::2]
    ends = starts + lengths
    if (starts < 0).any():
        raise RLEError(f"RLE start below {first} (starts are {first}-indexed)")
    if (lengths <= 0).any():
        raise RLEError("RLE run length must be positive")
    if (np.diff(starts) <= 0).any():
        raise RLEError("RLE starts must be strictly increasing")
    if (starts[1:] < ends[:-1]).any():
        raise RLEError("RLE runs overlap")
    if ends[-1] > num_pixels:
        raise RLEError(f"RLE run ends at pixel {int(ends[-1])} beyond the mask's {num_pixels} pixels")
    return starts, ends


@dataclass(frozen=True)
class RleFormat:
    """A competition's RLE conventions: the pixel order the mask is flattened in (`row`: C
    order, as Carvana; `column`: Fortran order, as TGS), the index of the first pixel (1 or 0)
    and the text of an empty mask. The default is Carvana's, whose strings the plain
    `rle_encode` / `rle_runs` / `Runs.to_rle` write and read byte for byte."""

    order: str = "row"
    start: int = 1
    empty: str = ""

    @classmethod
    def of(cls, data) -> RleFormat:
        """The format a data config (config.DataConfig, a floor above) states: `data.rle_order`,
        `data.rle_start`, `data.rle_empty`."""
        return cls(data.rle_order, int(data.rle_start), data.rle_empty)

    @property
    def is_carvana(self) -> bool:
        return self == CARVANA_RLE

    def encode(self, mask: np.ndarray) -> str:
        """A 2-D mask (nonzero = foreground) as this format's RLE string."""
        flat = np.ascontiguousarray(mask.T if self.order == "column" else mask).reshape(-1)
        if flat.dtype != np.bool_:
            flat = flat != 0
        # Positions where the value changes; a run starts at each 0->1 and ends at each 1->0.
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        if flat.size and flat[0]:
            edges = np.concatenate(([0], edges))
        if flat.size and flat[-1]:
            edges = np.concatenate((edges, [flat.size]))
        if not len(edges):
            return self.empty
        edges[1::2] -= edges[::2]  # run ends -> run lengths
        edges[::2] += self.start  # 0-indexed starts -> this format's
        return " ".join(map(str, edges.tolist()))

    def runs(self, rle: str, shape: tuple[int, int], strict_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Parse and check `rle` for a (height, width) mask: 0-indexed starts and exclusive ends
        in this format's pixel order. The empty text (and, unless `strict_empty`, a blank) is
        an empty mask; a submission is checked with `strict_empty`."""
        if not isinstance(rle, str):
            raise RLEError(f"RLE must be a string, got {type(rle).__name__}")
        text = rle.strip()
        if self.empty.strip() and text == self.empty.strip():
            text = ""
        elif strict_empty and not text and self.empty.strip():
            raise RLEError(f"an empty mask is written {self.empty!r} here, not as a blank")
        return rle_runs(text, shape[0] * shape[1], first=self.start)

    def decode(self, rle: str, shape: tuple[int, int]) -> np.ndarray:
        """An RLE string of this format as a (height, width) uint8 0/1 mask."""
        return self.mask(*self.runs(rle, shape), shape)

    def mask(self, starts: np.ndarray, ends: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Checked runs (`runs`) as a (height, width) uint8 0/1 mask."""
        height, width = shape
        # Alternate background and foreground segments: 0..start1, start1..end1, end1..start2, ...
        bounds = np.empty(2 * len(starts) + 2, dtype=np.int64)
        bounds[0], bounds[-1] = 0, height * width
        bounds[1:-1:2], bounds[2:-1:2] = starts, ends
        values = np.zeros(len(bounds) - 1, dtype=np.uint8)
        values[1::2] = 1
        flat = np.repeat(values, np.diff(bounds))
        return flat.reshape(width, height).T.copy() if self.order == "column" else flat.reshape(height, width)

    def from_carvana(self, rle: str, shape: tuple[int, int]) -> str:
        """A Carvana-format string (what the prediction chain writes) in this format; the string
        itself when this is Carvana's format."""
        return rle if self.is_carvana else self.encode(rle_decode(rle, shape))


CARVANA_RLE = RleFormat()


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (nonzero = foreground) as the competition's RLE string."""
    return CARVANA_RLE.encode(mask)


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode an RLE string into a uint8 0/1 mask of `shape` (height, width)."""
    return CARVANA_RLE.decode(rle, shape)


@dataclass(frozen=True)
class Runs:
    """The foreground of one (height, width) mask: run k covers columns starts[k]..ends[k]-1
    of row rows[k]; runs are sorted by (row, start), maximal (never adjacent in a row)."""

    height: int
    width: int
    rows: np.ndarray  # int64
    starts: np.ndarray  # int64, first column
    ends: np.ndarray  # int64, one past the last column

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Runs:
        """Runs of a 2-D mask (nonzero = foreground)."""
        return batch_runs(torch.from_numpy(np.ascontiguousarray(mask) != 0)[None])[0]

    def __len__(self) -> int:
        return len(self.rows)

    def area(self) -> int:
        return int((self.ends - self.starts).sum())

    def subset(self, keep: np.ndarray) -> Runs:
        return Runs(self.height, self.width, self.rows[keep], self.starts[keep], self.ends[keep])

    def complement(self) -> Runs:
        """The background's runs: in each row, the gaps before, between and after the foreground runs."""
        every_row = np.arange(self.height, dtype=np.int64)
        gap_rows = np.concatenate([every_row, self.rows])
        # a gap starts at a row's start or a run's end, and ends at a run's start or the row's end
        gap_starts = np.concatenate([np.zeros(self.height, np.int64), self.ends])
        gap_ends = np.concatenate([np.full(self.height, self.width, np.int64), self.starts])
        key = self.width + 1
        order_s = np.argsort(gap_rows * key + gap_starts, kind="stable")
        order_e = np.argsort(gap_rows * key + gap_ends, kind="stable")
        rows, starts, ends = gap_rows[order_s], gap_starts[order_s], gap_ends[order_e]  # a row's k-th start pairs with its k-th end
        keep = ends > starts
        return Runs(self.height, self.width, rows[keep], starts[keep], ends[keep])

    def to_mask(self) -> np.ndarray:
        """(height, width) uint8 0/1."""
        flat = np.zeros(self.height * self.width + 1, np.int8)
        offsets = self.rows * self.width
        flat[offsets + self.starts] += 1  # starts are distinct, and so are ends (a run may end where the next row's begins)
        flat[offsets + self.ends] -= 1
        return np.cumsum(flat[:-1], dtype=np.int8).view(np.uint8).reshape(self.height, self.width)

    def to_rle(self) -> str:
        """The competition's RLE: 1-indexed `start length` pairs over the mask flattened row-major
        (a run that ends a row and one that starts the next are one run there)."""
        if not len(self):
            return ""
        first, last = self.rows * self.width + self.starts, self.rows * self.width + self.ends
        breaks = np.flatnonzero(last[:-1] != first[1:])
        starts = first[np.concatenate([[0], breaks + 1])]
        ends = last[np.concatenate([breaks, [len(last) - 1]])]
        pairs = np.empty(2 * len(starts), np.int64)
        pairs[0::2], pairs[1::2] = starts + 1, ends - starts
        return " ".join(map(str, pairs.tolist()))

    def components(self) -> tuple[int, np.ndarray]:
        """8-connected components: (count, label of each run), labels numbered in the raster
        order of each component's first pixel."""
        if not len(self):
            return 0, np.zeros(0, np.int64)
        # Run j of row r + 1 touches run i of row r (diagonals included) when
        # starts[j] <= ends[i] and ends[j] >= starts[i]; with the rows laid end to end
        # (one spare column between them), those j are one contiguous slice per i.
        stride = self.width + 1
        first, last = self.rows * stride + self.starts, self.rows * stride + self.ends
        lo = np.searchsorted(last, first + stride, side="left")
        hi = np.searchsorted(first, last + stride, side="right")
        source, target = _slice_pairs(lo, np.maximum(hi, lo))
        graph = coo_matrix((np.ones(len(source), np.int8), (source, target)), shape=(len(self), len(self)))
        count, labels = connected_components(graph, directed=False)
        _, first_run = np.unique(labels, return_index=True)  # renumber by each component's first run
        rank = np.empty(count, np.int64)
        rank[np.argsort(first_run, kind="stable")] = np.arange(count)
        return count, rank[labels]


def _slice_pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with lo[i] <= j < hi[i], as two flat arrays."""
    counts = hi - lo
    source = np.repeat(np.arange(len(lo)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # 0, 1, .. within each i
    return source, np.repeat(lo, counts) + offsets


def row_sums(truth: np.ndarray) -> np.ndarray:
    """(H, W + 1) running counts of a 0/1 truth along each row: the truth pixels of any run by two lookups."""
    sums = np.zeros((truth.shape[0], truth.shape[1] + 1), np.int64)
    np.cumsum(truth, axis=1, out=sums[:, 1:])
    return sums


def dice(runs: Runs, truth_sums: np.ndarray) -> float:
    """Dice of the runs' mask against a truth given as its `row_sums`; empty against empty = 1."""
    overlap = int((truth_sums[runs.rows, runs.ends] - truth_sums[runs.rows, runs.starts]).sum())
    total = runs.area() + int(truth_sums[:, -1].sum())
    return 1.0 if total == 0 else 2 * overlap / total


def batch_runs(masks: torch.Tensor) -> list[Runs]:
    """Runs of each (H, W) mask of a (B, H, W) bool batch on any device: the run boundaries
    are found where the batch lives and only they come to the host."""
    batch, height, width = masks.shape
    bounds = run_bounds(masks)  # flat positions in the (B, H, W + 1) layout: start, end, start, end, ...
    stride = width + 1
    starts, ends = bounds[0::2], bounds[1::2]
    global_rows = starts // stride
    photo = global_rows // height
    cut = np.searchsorted(photo, np.arange(batch + 1))
    rows, first, last = global_rows % height, starts - global_rows * stride, ends - global_rows * stride
    return [Runs(height, width, rows[a:b], first[a:b], last[a:b]) for a, b in pairwise(cut)]
