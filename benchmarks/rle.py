"""RLE encode/decode time per 1918x1280 real mask: this project's codec against the
common Kaggle-kernel implementation, side by side in one run, on the same masks.

    python benchmarks/rle.py [--masks 768] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REAL_CARVANA, write_result  # noqa: E402

from carvana_seg.data.layout import read_mask_file  # noqa: E402
from carvana_seg.ops.rle import rle_decode, rle_encode  # noqa: E402


def kaggle_encode(img: np.ndarray) -> str:
    """The widely copied kernel: pad with zeros, compare neighbours, join."""
    pixels = img.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def kaggle_decode(mask_rle: str, shape: tuple[int, int]) -> np.ndarray:
    s = mask_rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends):
        img[lo:hi] = 1
    return img.reshape(shape)


def per_call_ms(fn, args_list, repeats: int) -> float:
    """Median over repeats of the mean time per call, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for args in args_list:
            fn(*args)
        times.append((time.perf_counter() - start) / len(args_list) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    paths = sorted((REAL_CARVANA / "train_masks").glob("*_mask.gif"))[: args.masks]
    if not paths:
        sys.exit(f"no real masks under {REAL_CARVANA / 'train_masks'}: this benchmark needs the real Carvana subset")
    masks = [read_mask_file(p) for p in paths]
    rles = [rle_encode(m) for m in masks]
    for mask, rle in zip(masks, rles):  # both implementations must agree before timing means anything
        assert kaggle_encode(mask) == rle and np.array_equal(kaggle_decode(rle, mask.shape), mask)

    rows = []
    for label, ours, theirs, inputs in [
        ("encode", rle_encode, kaggle_encode, [(m,) for m in masks]),
        ("decode", rle_decode, kaggle_decode, [(r, m.shape) for r, m in zip(rles, masks)]),
    ]:
        baseline_ms = per_call_ms(theirs, inputs, args.repeats)
        ours_ms = per_call_ms(ours, inputs, args.repeats)
        rows.append(f"| {label} | {baseline_ms:.2f} | {ours_ms:.2f} | {baseline_ms / ours_ms:.2f}x |")
    shape = masks[0].shape
    body = "\n".join(
        [
            f"{len(masks)} real masks of {shape[1]}x{shape[0]}, median of {args.repeats} passes; both give identical output.",
            "",
            "| operation | Kaggle kernel (ms/mask) | carvana_seg (ms/mask) | speed-up |",
            "| --- | ---: | ---: | ---: |",
            *rows,
        ]
    )
    write_result("rle", "RLE codec benchmark", body)


if __name__ == "__main__":
    main()
