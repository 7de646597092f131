"""The folders and csv layouts, the RLE conventions, image kinds, fold groups and the
sample-driven submission check (data/layouts.py, ops/rle.py RleFormat, data/folds.py)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from carvana_seg.config import ConfigError, DataConfig, load_config
from carvana_seg.data.folds import image_groups, make_folds
from carvana_seg.data.layout import CarvanaLayout, DataError, split_id
from carvana_seg.data.layouts import open_layout, with_data_channels
from carvana_seg.data.sources import DecodedSource
from carvana_seg.data.synthetic.layouts import CSV_RLE, generate_layout, generate_tgs
from carvana_seg.inference.check import check_submission
from carvana_seg.ops.rle import CARVANA_RLE, RleFormat, rle_encode

FOLDERS = DataConfig(layout="folders", train_dir="train/images", mask_dir="train/masks", test_dir="test/images")
CSV = DataConfig(layout="csv", masks_csv="train.csv", id_column="ImageId", rle_column="EncodedPixels", rle_order="column")


def folders_data(root, count=4, size=(12, 16), mode="L", empty=()):
    """A folders dataset of `count` images `<g>_<k>` (2 per group) with square masks; `empty` ids have none."""
    (root / "train/images").mkdir(parents=True)
    (root / "train/masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        image_id = f"g{k // 2}_{k % 2:02d}"
        shape = size if mode in ("L", "I;16") else (*size, 3)
        values = rng.integers(0, 4096 if mode == "I;16" else 256, shape).astype(np.uint16 if mode == "I;16" else np.uint8)
        Image.fromarray(values).save(root / "train/images" / f"{image_id}.png")
        mask = np.zeros(size, np.uint8)
        if image_id not in empty:
            mask[2:6, 3:9] = 255
        Image.fromarray(mask).save(root / "train/masks" / f"{image_id}.png")
    return dataclasses.replace(FOLDERS, root=str(root))


# ---- RLE conventions -------------------------------------------------------------------------
def test_the_carvana_format_writes_the_competition_rows_byte_for_byte():
    rng = np.random.default_rng(1)
    for _ in range(100):
        mask = (rng.random(tuple(rng.integers(1, 12, 2))) < rng.random()).astype(np.uint8)
        assert CARVANA_RLE.encode(mask) == rle_encode(mask)
        assert CARVANA_RLE.from_carvana(rle_encode(mask), mask.shape) == rle_encode(mask)


@pytest.mark.parametrize("fmt", [RleFormat("column", 1, ""), RleFormat("column", 0, "-"), RleFormat("row", 0, "-1")])
def test_every_format_reads_back_what_it_writes(fmt):
    rng = np.random.default_rng(2)
    for _ in range(100):
        mask = (rng.random(tuple(rng.integers(1, 12, 2))) < rng.random()).astype(np.uint8)
        text = fmt.encode(mask)
        assert (fmt.decode(text, mask.shape) == mask).all()
        assert fmt.from_carvana(rle_encode(mask), mask.shape) == text
    assert fmt.encode(np.zeros((3, 4), np.uint8)) == fmt.empty


def test_column_order_runs_down_the_columns_and_start_index_shifts():
    mask = np.array([[1, 1], [0, 1]], np.uint8)  # row-major 1 1 0 1; column-major 1 0 1 1
    assert RleFormat("row", 1).encode(mask) == "1 2 4 1"
    assert RleFormat("column", 1).encode(mask) == "1 1 3 2"
    assert RleFormat("column", 0).encode(mask) == "0 1 2 2"


def test_a_submission_is_checked_in_its_format_against_the_sample_header(tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("id,rle_mask\na,1 1\nb,1 1\n")
    fmt = RleFormat("column", 0, "-")
    good = tmp_path / "good.csv"
    good.write_text("id,rle_mask\na,0 3\nb,-\n")
    assert check_submission(good, sample, (2, 2), fmt) == []
    bad = tmp_path / "bad.csv"
    bad.write_text("img,rle_mask\na,1 4\nb,\n")
    problems = check_submission(bad, sample, (2, 2), fmt)
    assert any("header ['img', 'rle_mask'], expected ['id', 'rle_mask']" in p for p in problems)
    assert any(":2 (a): RLE run ends at pixel 5" in p for p in problems)
    assert any(":3 (b): an empty mask is written '-' here" in p for p in problems)


# ---- the layouts read the same scenes alike --------------------------------------------------
def test_folders_and_csv_layouts_read_the_masks_the_carvana_layout_holds(tmp_path):
    from carvana_seg.data.synthetic import generate

    generate(tmp_path / "carvana", cars=1, test_cars=1, size=(48, 32), seed=3)
    generate_layout(tmp_path / "folders", "folders", cars=1, test_cars=1, size=(48, 32), seed=3)
    generate_layout(tmp_path / "csv", "csv", cars=1, test_cars=1, size=(48, 32), seed=3)
    carvana = CarvanaLayout(tmp_path / "carvana")
    folders = open_layout(dataclasses.replace(FOLDERS, root=str(tmp_path / "folders")))
    table = open_layout(dataclasses.replace(CSV, root=str(tmp_path / "csv")))
    assert carvana.train_ids == folders.train_ids == table.train_ids
    assert carvana.test_ids == folders.test_ids == table.test_ids
    folders.check_train(folders.train_ids)
    table.check_train(table.train_ids)
    for image_id in carvana.train_ids:
        truth = carvana.read_mask(image_id)
        assert (folders.read_mask(image_id) == truth).all() and (table.read_mask(image_id) == truth).all()
        assert table.rle_masks[image_id] == CSV_RLE.encode(truth) != rle_encode(truth)
    assert table.submission_names[0].endswith(".png") and not folders.submission_names[0].endswith(".png")
    assert folders.channels == table.channels == 3


def test_a_grey_16_bit_image_is_scaled_by_the_stated_range(tmp_path):
    data = folders_data(tmp_path, mode="I;16")
    path = tmp_path / "train/images/g0_00.png"
    raw = np.asarray(Image.open(path)).astype(np.float64)
    full = open_layout(data).read_photo(path)
    stated = open_layout(dataclasses.replace(data, intensity_range="0-4095")).read_photo(path)
    assert full.shape == stated.shape == (12, 16, 1) and full.dtype == stated.dtype == np.uint8
    assert np.abs(stated[..., 0] - np.round(raw * 255 / 4095)).max() <= 1
    assert np.abs(full[..., 0] - np.round(raw * 255 / 65535)).max() <= 1
    source = DecodedSource(open_layout(data), ["g0_00", "g1_01"], (6, 8))
    image, coverage = source.get(0)
    assert image.shape == (6, 8, 1) and coverage.shape == (6, 8)


def test_in_channels_follows_the_data_unless_set(tmp_path):
    layout = open_layout(folders_data(tmp_path))
    cfg = load_config(None, ["data.layout=folders"])
    assert cfg.model.in_channels == 0 and with_data_channels(cfg, layout).model.in_channels == 1
    with pytest.raises(ConfigError, match=r"model.in_channels=3, but the images of .* are grey \(1 channel\)"):
        with_data_channels(load_config(None, ["model.in_channels=3"]), layout)


# ---- each bad file or row is one error naming it ---------------------------------------------
def break_folders(root, how):
    if how == "no mask":
        (root / "train/masks/g0_01.png").unlink()
        return "no mask for .*g0_01.png"
    if how == "orphan mask":
        (root / "train/images/g1_01.png").unlink()
        return r"mask .*train/masks/g1_01.png has no image"
    if how == "mask size":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "train/masks/g1_00.png")
        return r"mask .*g1_00.png is 5x5 but its image is 16x12"
    if how == "mask values":
        Image.fromarray(np.full((12, 16), 7, np.uint8)).save(root / "train/masks/g0_00.png")
        return r"mask .*g0_00.png: values \[7\] are neither 0/1 nor 0/255"
    if how == "unreadable image":
        (root / "train/images/g1_00.png").write_bytes(b"not a png")
        return r"cannot read image .*g1_00.png"
    if how == "two files of one id":
        Image.fromarray(np.zeros((12, 16), np.uint8)).save(root / "train/images/g0_00.tif")
        return r"g0_00.png and .*g0_00.tif are two images of one id"
    if how == "RGBA image":
        Image.fromarray(np.zeros((12, 16, 4), np.uint8)).save(root / "train/images/g1_01.png")
        return r"image .*g1_01.png: mode 'RGBA', expected grey"
    if how == "mixed channels":
        Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "train/images/g1_01.png")
        return r"image .*g1_01.png has 3 channel\(s\), .*g0_00.png has 1"
    (root / "train/images/notes.txt").write_text("x")
    return r"notes.txt: not an image file"


@pytest.mark.parametrize("how", ["no mask", "orphan mask", "mask size", "mask values", "unreadable image",
                                 "two files of one id", "RGBA image", "mixed channels", "stray file"])
def test_each_bad_file_of_the_folders_layout_is_one_error_naming_it(tmp_path, how):
    data = folders_data(tmp_path)
    expected = break_folders(tmp_path, how)
    layout = open_layout(data)
    with pytest.raises(DataError, match=expected) as err:
        layout.check_train(layout.train_ids)
        DecodedSource(layout, layout.train_ids, (6, 8)).get(0)
    assert "\n" not in str(err.value)


def csv_data(root, rows):
    (root / "train").mkdir(parents=True)
    for image_id in ("a_01", "a_02", "b_01"):
        Image.fromarray(np.zeros((4, 5), np.uint8)).save(root / "train" / f"{image_id}.png")
    (root / "train.csv").write_text("ImageId,EncodedPixels\n" + "".join(f"{i},{r}\n" for i, r in rows))
    return open_layout(dataclasses.replace(CSV, root=str(root)))


@pytest.mark.parametrize("rows, expected", [
    ([("a_01.png", "1 3"), ("a_02", "")], r"no mask for .*b_01.png: no row 'b_01' in .*train.csv"),
    ([("a_01", ""), ("a_02", ""), ("b_01", ""), ("c_01", "")], r"train.csv: row c_01 has no image"),
    ([("a_01", "1 30"), ("a_02", ""), ("b_01", "")], r"train.csv: row a_01 \(5x4 image\): RLE run ends at pixel 30"),
    ([("a_01", "1 x"), ("a_02", ""), ("b_01", "")], r"train.csv: row a_01 \(5x4 image\): RLE holds a token"),
    ([("a_01", ""), ("a_01.png", ""), ("a_02", ""), ("b_01", "")], r"train.csv: 1 images have more than one row, e.g. a_01"),
])
def test_each_bad_row_of_the_csv_layout_is_one_error_naming_it(tmp_path, rows, expected):
    layout = csv_data(tmp_path, rows)
    with pytest.raises(DataError, match=expected) as err:
        layout.check_train(layout.train_ids)
    assert "\n" not in str(err.value)


def test_csv_layout_names_a_missing_column(tmp_path):
    layout = csv_data(tmp_path, [("a_01", "")])
    layout.data = dataclasses.replace(layout.data, rle_column="rle")
    with pytest.raises(DataError, match=r"train.csv: no column 'rle'"):
        layout.rle_masks


# ---- groups and strata -----------------------------------------------------------------------
def test_the_default_regex_groups_carvana_ids_by_car(tmp_path):
    ids = ["00087a6bd4dc_01", "00087a6bd4dc_16", "ab_cd_03"]
    assert image_groups(None, ids, DataConfig()) == [split_id(i)[0] for i in ids]
    with pytest.raises(DataError, match=r"image 'plain' does not match data.group_regex"):
        image_groups(None, ["plain"], DataConfig())
    with pytest.raises(DataError, match=r"needs a named group"):
        image_groups(None, ids, DataConfig(group_regex=r"(.+)_\d+"))


def test_groups_from_a_metadata_column_or_none(tmp_path):
    (tmp_path / "meta.csv").write_text("img,patient\nx.png,p1\ny.png,p1\nz.png,p2\n")
    data = DataConfig(groups="column", metadata_csv="meta.csv", group_column="patient")
    layout = type("Root", (), {"root": tmp_path})
    assert image_groups(layout, ["x", "y", "z"], data) == ["p1", "p1", "p2"]
    with pytest.raises(DataError, match=r"meta.csv: no 'patient' for image w"):
        image_groups(layout, ["x", "w"], data)
    with pytest.warns(UserWarning, match="each image is its own group.*CV is inflated"):
        assert image_groups(layout, ["x", "y"], DataConfig(groups="none")) == ["x", "y"]


def test_folds_share_out_empty_masks(tmp_path):
    generate_tgs(tmp_path / "tgs", images=40, test_images=1, size=16, empty_share=0.4, seed=5)
    data = DataConfig(root=str(tmp_path / "tgs"), layout="folders", train_dir="train/images", mask_dir="train/masks",
                      test_dir="test/images", groups="none")
    layout = open_layout(data)
    with pytest.warns(UserWarning):
        folds = make_folds(layout, 4, 0, data)
    empty = pd.Series({i: layout.mask_area(i) == 0 for i in layout.train_ids})
    per_fold = folds.set_index("img")["fold"].groupby(empty).value_counts().unstack(fill_value=0)
    assert empty.sum() == 16 and per_fold.loc[True].tolist() == [4, 4, 4, 4]


def test_carvana_folds_are_unchanged_by_the_group_settings(tmp_path):
    from carvana_seg.data.synthetic import generate

    generate(tmp_path / "d", cars=4, test_cars=0, size=(48, 32), seed=0)
    layout = CarvanaLayout(tmp_path / "d")
    assert make_folds(layout, 2, 42).equals(make_folds(layout, 2, 42, DataConfig(root=str(tmp_path / "d"))))


def test_a_preset_per_layout_loads(tmp_path):
    for name, layout in (("carvana", "carvana"), ("folders", "folders"), ("csv", "csv"), ("tgs", "folders")):
        assert load_config(f"configs/layouts/{name}.yaml").data.layout == layout
    assert re.fullmatch(load_config("configs/layouts/carvana.yaml").data.group_regex.replace("(?P<group>", "("), "x_01")


# ---- empty masks -----------------------------------------------------------------------------
def test_threshold_and_min_area_score_an_empty_mask_by_the_competition_rule():
    import torch

    from carvana_seg.ops.metrics import batch_level_histograms, dice_by_level
    from carvana_seg.ops.rle import Runs, dice, row_sums
    from carvana_seg.recipe.postprocess import min_area

    empty = np.zeros((50, 50), np.uint8)
    speck = empty.copy()
    speck[10, 10:12] = 1  # 2 pixels, under min_area's 0.1% of the image
    assert dice(Runs.from_mask(speck), row_sums(empty)) == 0.0
    assert dice(min_area(Runs.from_mask(speck)), row_sums(empty)) == 1.0  # the speck goes: an empty prediction scores 1
    levels = torch.zeros((1, 50, 50), dtype=torch.uint8)
    levels[0, 10, 10:12] = 200
    per_level = dice_by_level(*(h.numpy() for h in batch_level_histograms(levels, torch.from_numpy(empty)[None])))
    assert per_level[0, 200] == 0.0 and per_level[0, 201] == 1.0 and per_level[0, 1] == 0.0


def test_the_leaderboard_splits_dice_on_empty_masks_only_where_there_are_some():
    from carvana_seg.reporting.leaderboard import empty_split

    positive = np.array([[0, 5], [0, 0], [3, 0], [0, 0]])  # images 1 and 3 have no true pixel
    per_image = np.array([0.9, 1.0, 0.7, 0.0])
    assert empty_split(positive, per_image) == {"dice_empty": 0.5, "dice_non_empty": pytest.approx(0.8)}
    assert empty_split(positive[[0, 2]], per_image[[0, 2]]) == {}


def test_images_of_different_sizes_are_checked_and_read_at_their_own_size(tmp_path):
    data = folders_data(tmp_path)
    Image.fromarray(np.zeros((20, 10), np.uint8)).save(tmp_path / "train/images/g1_01.png")
    mask = np.zeros((20, 10), np.uint8)
    mask[5:10, 2:5] = 1
    Image.fromarray(mask).save(tmp_path / "train/masks/g1_01.png")
    layout = open_layout(data)
    layout.check_train(layout.train_ids)
    source = DecodedSource(layout, layout.train_ids, (6, 8))
    assert source.original_size(0) == (12, 16) and source.original_size(3) == (20, 10)
    image, coverage = source.get(3)
    assert image.shape == (6, 8, 1) and coverage.max() > 0
    assert layout.mask_area("g1_01") == pytest.approx(15 / 200)


@pytest.mark.parametrize("suffix, mode", [(".tif", "I;16"), (".gif", "P"), (".bmp", "L"), (".png", "P")])
def test_images_and_masks_in_other_formats(tmp_path, suffix, mode):
    data = folders_data(tmp_path)
    for folder in ("images", "masks"):
        (tmp_path / "train" / folder / "g0_00.png").unlink()
    truth = np.zeros((12, 16), np.uint8)
    truth[3:7, 4:10] = 1
    mask = Image.fromarray(truth if mode == "P" else truth * np.uint8(255))
    if mode == "P":
        mask = mask.convert("L").convert("P") if suffix == ".gif" else Image.frombytes("P", (16, 12), truth.tobytes())
        mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.save(tmp_path / "train/masks" / f"g0_00{suffix}")
    image = np.full((12, 16), 2000 if mode == "I;16" else 100, np.uint16 if mode == "I;16" else np.uint8)
    Image.fromarray(image).save(tmp_path / "train/images" / f"g0_00{'.tif' if mode == 'I;16' else '.png'}")
    if mode == "I;16":  # the other images are 8-bit grey PNGs: one channel too
        data = dataclasses.replace(data, intensity_range="0-4000")
    layout = open_layout(data)
    layout.check_train(layout.train_ids)
    assert (layout.read_mask("g0_00") == truth).all()
    photo = layout.read_photo(layout.image_path("g0_00"))
    assert photo.shape == (12, 16, 1) and int(photo[0, 0, 0]) == (128 if mode == "I;16" else 100)


def test_the_layout_choices_are_the_layouts_there_are():
    from carvana_seg import config
    from carvana_seg.data.layouts import LAYOUTS

    assert config.LAYOUT_CHOICES == ("carvana", *LAYOUTS)
    with pytest.raises(ConfigError, match=r"data.layout: 'tiff' is not one of carvana, folders, csv"):
        load_config(None, ["data.layout=tiff"])
    with pytest.raises(ConfigError, match=r"data.rle_start: must be 0 or 1, got 2"):
        load_config(None, ["data.rle_start=2"])
