"""Full-size photos as the prediction chain needs them: grey guides for edge refinement,
and batches of same-size images (a batch is one tensor, so sizes are never mixed)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from carvana_seg.data.layout import open_image


def read_grey(path: Path) -> np.ndarray:
    """The photo as uint8 grey levels at full size.

    A JPEG is decoded to its luma plane only (libjpeg's grayscale output): Y is the same
    0.299 R + 0.587 G + 0.114 B as OpenCV's RGB->grey, without decoding the two chroma planes
    or converting colours, so the guide costs a fraction of a full decode. It differs from
    grey-of-RGB by a small fraction of a level on average (tests/test_device_decode.py), a few
    saturated pixels by more, where RGB clips."""
    with open_image(path, "photo") as img:
        img.draft("L", img.size)  # a no-op for formats other than JPEG
        return np.array(img.convert("L"))  # writable: it becomes a tensor


def same_size_batches(sizes: Sequence[tuple[int, int]], order: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Cut `order` into batches of at most `batch_size` consecutive indices of one size each."""
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) == batch_size or tuple(sizes[i]) != tuple(sizes[batch[0]])):
            yield batch
            batch = []
        batch.append(int(i))
    if batch:
        yield batch
