"""The RLE codec: exact round trips and byte-for-byte agreement with the official rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from carvana_seg.data.layout import read_mask_file
from carvana_seg.ops.rle import RLEError, rle_decode, rle_encode, rle_runs


@settings(max_examples=200, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 1918)), elements=st.integers(0, 1)))
def test_round_trip_random_masks(mask):
    assert np.array_equal(rle_decode(rle_encode(mask), mask.shape), mask)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (1280, 1918)])
def test_round_trip_edge_cases(shape):
    empty = np.zeros(shape, np.uint8)
    full = np.ones(shape, np.uint8)
    assert rle_encode(empty) == ""
    assert rle_encode(full) == f"1 {empty.size}"
    first, last = empty.copy(), empty.copy()
    first.flat[0] = 1
    last.flat[-1] = 1
    assert rle_encode(first) == "1 1"
    assert rle_encode(last) == f"{empty.size} 1"
    for mask in (empty, full, first, last):
        assert np.array_equal(rle_decode(rle_encode(mask), shape), mask)


def test_row_major_order():
    mask = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    assert rle_encode(mask) == "2 3"  # pixels 2,3 then 4 in C order: one run of 3
    assert rle_encode(mask.astype(bool)) == "2 3"
    assert rle_encode(mask * 255) == "2 3"


@pytest.mark.parametrize(
    "bad, why",
    [("1", "odd"), ("1 x", "integer"), ("0 2", "below 1"), ("1 0", "positive"), ("5 1 3 1", "increasing"),
     ("1 3 2 1", "overlap"), ("10 2", "beyond")],
)
def test_malformed_rle_is_an_error(bad, why):
    with pytest.raises(RLEError, match=why):
        rle_decode(bad, (2, 5))


def test_official_row_byte_for_byte(real_carvana):
    official = pd.read_csv(real_carvana / "train_masks_official_rows.csv")
    row = official.set_index("img").loc["00087a6bd4dc_01.jpg", "rle_mask"]
    mask = read_mask_file(real_carvana / "train_masks" / "00087a6bd4dc_01_mask.gif")
    assert rle_encode(mask) == row
    assert np.array_equal(rle_decode(row, mask.shape), mask)


def test_all_real_rows_round_trip_against_their_gifs(real_carvana):
    table = pd.read_csv(real_carvana / "train_masks.csv")
    assert len(table) == 768
    for img, rle in zip(table["img"], table["rle_mask"]):
        mask = read_mask_file(real_carvana / "train_masks" / img.replace(".jpg", "_mask.gif"))
        assert rle_encode(mask) == rle, img
        assert np.array_equal(rle_decode(rle, mask.shape), mask), img


def test_rle_parser_rejects_overflowing_numbers():
    with pytest.raises(RLEError, match="not an integer"):
        rle_runs("1 99999999999999999999999", 10)
