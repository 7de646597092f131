"""Full-size photos as the prediction chain needs them: batches of same-size images (a batch
is one tensor, so sizes are never mixed). Grey guides for edge refinement: `layout.read_grey`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence


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
