"""The Carvana layout (data/layout.py): photos checked up front, decompression bombs refused
from the header, one parser for train_masks.csv rows, upper-case .JPG photos found."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import gif_claiming, jpeg_claiming, one_line_error_of
from carvana_seg.data.folds import make_folds
from carvana_seg.data.layout import (
    MAX_PIXELS_ENV,
    CarvanaLayout,
    DataError,
    check_photos,
    image_size,
    read_image,
    read_mask_file,
)
from carvana_seg.data.sources import DecodedSource, build_cache


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest resets the filter layout.py sets
@pytest.mark.parametrize("side", [30000, 12000])  # beyond PIL's own error; beyond our limit only
def test_oversized_headers_are_refused_before_decoding(tmp_path, side):
    photo = jpeg_claiming(tmp_path / f"bomb{side}.jpg", side, side)
    assert photo.stat().st_size < 4096
    for read in (image_size, read_image):
        with pytest.raises(DataError, match=f"image {photo}: .*decompression bomb"):
            read(photo)
    message = one_line_error_of(lambda: read_image(photo))
    assert str(photo) in message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest resets the filter layout.py sets
def test_oversized_mask_header_is_refused(tmp_path):
    mask = gif_claiming(tmp_path / "m_mask.gif", 10000, 10000)
    with pytest.raises(DataError, match=f"mask {mask}: header claims 10000x10000"):
        read_mask_file(mask)


def test_pils_own_bomb_warning_does_not_surface(tmp_path):
    photo = jpeg_claiming(tmp_path / "big.jpg", 12000, 12000)  # over PIL's warning limit, under its error
    code = "import sys; from carvana_seg.commands.cli import run; from carvana_seg.data.layout import image_size; run(lambda: image_size(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", code, str(photo)], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith(f"error: image {photo}: header claims 12000x12000")
    assert result.stderr.count("\n") == 1 and "Warning" not in result.stderr, result.stderr


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    photo = jpeg_claiming(tmp_path / "big.jpg", 9000, 8000)  # 72 MP: over the 64 MP default
    with pytest.raises(DataError, match=MAX_PIXELS_ENV):
        image_size(photo)
    monkeypatch.setenv(MAX_PIXELS_ENV, "100000000")
    assert image_size(photo) == (8000, 9000)  # the header only: nothing is decoded
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(DataError, match=f"{MAX_PIXELS_ENV}='lots'"):
        image_size(photo)


def test_missing_photo_is_found_up_front(tiny_layout):
    layout = CarvanaLayout(tiny_layout)
    ids = layout.train_ids
    (tiny_layout / "train" / "car003_03.jpg").unlink()
    with pytest.raises(DataError, match="photo .*car003_03.jpg is missing"):
        check_photos([layout.image_path(i) for i in ids])
    with pytest.raises(DataError, match="car003_03.jpg"):
        DecodedSource(layout, ids, (16, 24))


@pytest.mark.parametrize(
    "rle, why",
    [("1 2 x 4", "not an integer"), ("1 2 3", "odd number"), ("862 5", "beyond"), ("99999999999999999999 1", "not an integer")],
)
def test_bad_train_masks_row_names_file_and_row(tiny_layout, rle, why):
    table = pd.read_csv(tiny_layout / "train_masks.csv")
    table.loc[table["img"] == "car002_02.jpg", "rle_mask"] = rle  # 24x36 = 864 pixels
    table.to_csv(tiny_layout / "train_masks.csv", index=False)
    csv = tiny_layout / "train_masks.csv"
    with pytest.raises(DataError, match=f"{csv}: row car002_02.jpg .*{why}"):
        make_folds(CarvanaLayout(tiny_layout), 2, seed=0)
    for gif in (tiny_layout / "train_masks").iterdir():
        gif.unlink()
    with pytest.raises(DataError, match=f"{csv}: row car002_02.jpg .*{why}"):
        CarvanaLayout(tiny_layout).read_mask("car002_02")


def test_duplicate_train_masks_rows_are_an_error(tiny_layout):
    table = pd.read_csv(tiny_layout / "train_masks.csv")
    pd.concat([table, table.iloc[[3]]]).to_csv(tiny_layout / "train_masks.csv", index=False)
    with pytest.raises(DataError, match="train_masks.csv: 1 images have more than one row, e.g. car001_01"):
        CarvanaLayout(tiny_layout).rle_masks


def test_upper_case_jpg_photos_are_used_in_train_and_test(tiny_layout, tmp_path):
    (tiny_layout / "train" / "car001_02.jpg").rename(tiny_layout / "train" / "car001_02.JPG")
    (tiny_layout / "test" / "test02_01.jpg").rename(tiny_layout / "test" / "test02_01.Jpg")
    layout = CarvanaLayout(tiny_layout)
    assert len(layout.train_ids) == 12 and "car001_02" in layout.train_ids
    assert layout.image_path("car001_02").name == "car001_02.JPG"
    assert layout.image_path("test02_01", "test").name == "test02_01.Jpg"
    assert read_image(layout.image_path("test02_01", "test")).shape == (24, 36, 3)
    cached = build_cache(layout, layout.train_ids, (16, 24), tmp_path / "cache")
    index = layout.train_ids.index("car001_02")
    assert np.array_equal(cached.get(index)[0], DecodedSource(layout, layout.train_ids, (16, 24)).get(index)[0])
    assert layout.image_path("nope_01", "test") == tiny_layout / "test" / "nope_01.jpg"  # named in the reader's error


def test_two_photos_of_one_id_are_an_error(tiny_layout):
    (tiny_layout / "train" / "car001_02.JPG").write_bytes((tiny_layout / "train" / "car001_02.jpg").read_bytes())
    with pytest.raises(DataError, match=r"car001_02\.(jpg|JPG) and .*car001_02\.(jpg|JPG) are two photos of one id"):
        CarvanaLayout(tiny_layout).train_ids
