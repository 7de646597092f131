"""Data layer: reading the layout, loud errors for bad files, the resize cache, the dataset."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import jpeg_claiming, one_line_error_of
from carvana_seg.data.dataset import SegmentationDataset
from carvana_seg.data.floor import DarkenFloor
from carvana_seg.data.layout import CarvanaLayout, DataError, read_mask_file, split_id, write_mask_gif
from carvana_seg.data.sources import (
    BUILD_LOCK,
    HALF_COVERED,
    DecodedSource,
    build_cache,
    covered,
    mask_coverage,
    remove_abandoned_builds,
    resize_mask,
)
from carvana_seg.data.workers import worker_message


def test_ids_cars_angles_and_masks(tiny_layout):
    layout = CarvanaLayout(tiny_layout)
    assert len(layout.train_ids) == 12 and layout.train_ids[0] == "car000_01"
    assert split_id("00087a6bd4dc_16") == ("00087a6bd4dc", 16)
    mask = layout.read_mask("car001_02")
    assert mask.shape == (24, 36) and set(np.unique(mask)) == {0, 1}
    assert layout.test_ids == ["test01_01", "test02_01", "test03_01"]


def test_masks_from_rle_when_gifs_are_absent(tiny_layout):
    layout = CarvanaLayout(tiny_layout)
    from_gif = layout.read_mask("car002_03")
    for gif in (tiny_layout / "train_masks").iterdir():
        gif.unlink()
    (tiny_layout / "train_masks").rmdir()
    assert np.array_equal(CarvanaLayout(tiny_layout).read_mask("car002_03"), from_gif)


def test_single_channel_0_255_masks_accepted(tmp_path):
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 2:4] = 255
    Image.fromarray(mask, mode="L").save(tmp_path / "m.gif")
    assert read_mask_file(tmp_path / "m.gif").sum() == 4


def test_bad_mask_values_name_the_file(tmp_path):
    write_mask_gif(np.full((4, 5), 7, np.uint8), tmp_path / "m_mask.gif")
    with pytest.raises(DataError, match=r"m_mask.gif: values \[7\] are neither 0/1 nor 0/255"):
        read_mask_file(tmp_path / "m_mask.gif")


def test_missing_mask_is_an_error_not_a_skip(tiny_layout):
    (tiny_layout / "train_masks" / "car001_01_mask.gif").unlink()
    (tiny_layout / "train_masks.csv").unlink()
    with pytest.raises(DataError, match="no mask for .*car001_01.jpg"):
        CarvanaLayout(tiny_layout).read_mask("car001_01")


def test_unreadable_image_names_the_file(tiny_layout):
    (tiny_layout / "train" / "car003_02.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="car003_02.jpg"):
        DecodedSource(CarvanaLayout(tiny_layout), ["car003_02"], (12, 18)).get(0)


def test_size_mismatch_names_the_mask(tiny_layout):
    write_mask_gif(np.zeros((10, 10), np.uint8), tiny_layout / "train_masks" / "car000_02_mask.gif")
    with pytest.raises(DataError, match="car000_02_mask.gif is 10x10 but its image is 36x24"):
        CarvanaLayout(tiny_layout).read_mask("car000_02")


def test_cache_matches_decoding_and_is_invalidated(tiny_layout, tmp_path):
    layout = CarvanaLayout(tiny_layout)
    ids, hw = layout.train_ids, (12, 18)
    cached = build_cache(layout, ids, hw, tmp_path / "cache")
    decoded = DecodedSource(layout, ids, hw)
    for i in range(len(ids)):
        (ci, cm), (di, dm) = cached.get(i), decoded.get(i)
        assert np.array_equal(ci, di) and np.array_equal(cm, dm)
    assert cached.original_size(0) == (24, 36)
    assert len(list((tmp_path / "cache").iterdir())) == 1

    assert build_cache(layout, ids, hw, tmp_path / "cache").ids == ids  # reused, not rebuilt
    mask_path = tiny_layout / "train_masks" / "car000_01_mask.gif"
    write_mask_gif(np.ones((24, 36), np.uint8), mask_path)
    stamp = time.time() + 5
    os.utime(mask_path, (stamp, stamp))
    rebuilt = build_cache(layout, ids, hw, tmp_path / "cache")
    assert rebuilt.get(0)[1].all()  # the changed mask is seen
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the stale cache is gone


def test_dataset_samples_and_seeded_augmentation(tiny_layout):
    source = DecodedSource(CarvanaLayout(tiny_layout), CarvanaLayout(tiny_layout).train_ids, (16, 24))
    val = SegmentationDataset(source, [3, 5], train=False)
    sample = val[1]
    assert sample["image"].shape == (3, 16, 24) and sample["mask"].shape == (1, 16, 24)
    assert int(sample["index"]) == 5 and sample["id"] == source.ids[5]

    train = SegmentationDataset(source, list(range(12)), train=True, seed=1)
    epoch0 = [train[i]["image"] for i in range(12)]
    assert all((a == b).all() for a, b in zip(epoch0, [train[i]["image"] for i in range(12)]))
    train.set_epoch(1)
    assert any((a != b).any() for a, b in zip(epoch0, [train[i]["image"] for i in range(12)]))


def car_on_floor(hw=(60, 90)) -> tuple[np.ndarray, np.ndarray]:
    """A mid-grey photo with a bright 'car' box in the middle and its mask."""
    image = np.full((*hw, 3), 160, np.uint8)
    mask = np.zeros(hw, np.uint8)
    mask[20:40, 30:60] = 1
    image[mask > 0] = 230
    return image, mask


def test_darken_floor_darkens_only_the_floor_below_the_car():
    image, mask = car_on_floor()
    transform = A.Compose([DarkenFloor(p=1.0)])
    transform.set_random_seed(3)
    out = transform(image=image, mask=mask)
    assert (out["mask"] == mask).all()
    assert (out["image"][mask > 0] == image[mask > 0]).all()  # the car is untouched
    assert (out["image"] <= image).all()  # nothing is brightened
    below = out["image"][41:, 30:60]
    assert (below < image[41:, 30:60]).any() and below.min() < 0.8 * 160  # a real shadow under the car
    assert (out["image"][:8] == image[:8]).all()  # the sky above the car is untouched

    again = A.Compose([DarkenFloor(p=1.0)])
    again.set_random_seed(3)
    assert (again(image=image, mask=mask)["image"] == out["image"]).all()  # seeded: reproducible


def test_darken_floor_leaves_an_empty_mask_alone_and_needs_a_mask():
    image, mask = car_on_floor()
    transform = A.Compose([DarkenFloor(p=1.0)])
    assert (transform(image=image, mask=np.zeros_like(mask))["image"] == image).all()
    with pytest.raises(ValueError, match="needs the mask"):
        transform(image=image)


def test_dataset_uses_floor_darkening_only_when_asked(tiny_layout):
    source = DecodedSource(CarvanaLayout(tiny_layout), CarvanaLayout(tiny_layout).train_ids, (16, 24))
    with_floor = SegmentationDataset(source, [0], train=True, darken_floor=1.0).transform
    assert any(isinstance(t, DarkenFloor) for t in with_floor.transforms)
    assert not any(isinstance(t, DarkenFloor) for t in SegmentationDataset(source, [0], train=True).transform.transforms)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_mask_coverage_keeps_the_outline_between_pixels():
    # A disc whose outline falls between the pixels of a 10x smaller grid: rounding the small
    # mask to 0/1 moves the outline by up to half a small pixel, its coverage keeps it.
    yy, xx = np.mgrid[:240, :360]
    disc = ((yy - 117.3) ** 2 + (xx - 181.6) ** 2 < 83.7**2).astype(np.uint8)
    coverage = mask_coverage(disc, (24, 36))
    assert coverage.dtype == np.uint8 and 0 < coverage[coverage < 255].max() and (coverage == 255).any()
    assert np.array_equal(covered(coverage), resize_mask(disc, (24, 36)))

    def upsampled(small: np.ndarray) -> np.ndarray:
        return cv2.resize(small, (360, 240), interpolation=cv2.INTER_LINEAR) >= HALF_COVERED

    from_coverage, from_binary = dice(upsampled(coverage), disc > 0), dice(upsampled(covered(coverage) * 255), disc > 0)
    assert from_coverage > 0.99 and from_coverage - from_binary > 0.01, (from_coverage, from_binary)  # 0.9949 vs 0.9784


def test_dataset_targets_are_coverage_with_soft_masks_else_rounded(tiny_layout):
    source = DecodedSource(CarvanaLayout(tiny_layout), CarvanaLayout(tiny_layout).train_ids, (16, 24))
    coverage = source.get(2)[1]
    assert ((coverage > 0) & (coverage < 255)).any()  # the resized outline has partly covered pixels
    soft = SegmentationDataset(source, [2], train=False, soft_masks=True)[0]["mask"][0].numpy()
    hard = SegmentationDataset(source, [2], train=False)[0]["mask"][0].numpy()
    np.testing.assert_allclose(soft, coverage / 255, atol=1e-6)
    assert np.array_equal(hard, covered(coverage))

    augmented = SegmentationDataset(source, list(range(12)), train=True, seed=0, darken_floor=1.0, soft_masks=True)
    targets = torch.cat([augmented[i]["mask"] for i in range(12)])
    assert targets.min() >= 0 and targets.max() <= 1 and ((targets > 0) & (targets < 1)).any()


def test_a_training_bomb_stops_the_cache_build_with_the_file_named(tiny_layout, tmp_path):
    bomb = jpeg_claiming(tiny_layout / "train" / "car002_01.jpg", 30000, 30000)
    layout = CarvanaLayout(tiny_layout)
    message = one_line_error_of(lambda: build_cache(layout, layout.train_ids, (16, 24), tmp_path / "cache"))
    assert str(bomb) in message
    assert not list(tmp_path.glob("cache/*")) and not list(tmp_path.glob("cache/.*"))  # nothing half built


def test_abandoned_cache_builds_are_removed_but_running_ones_kept(tiny_layout, tmp_path):
    cache = tmp_path / "cache"
    name = "tiny-train-16x24-0123456789abcdef"
    killed = cache / f".{name}.k1ll3d_x"  # its builder is gone: the lock file is free
    running = cache / f".{name}.running"  # a build in progress holds its lock
    fresh = cache / f".{name}.justmade"  # created a moment ago, lock file not yet written
    old = cache / f".{name}.oldversn"  # left by a build without a lock file, hours ago
    unrelated = cache / ".keepme"
    for folder in (killed, running, fresh, old, unrelated):
        folder.mkdir(parents=True)
        (folder / "images.u8").write_bytes(b"\0" * 64)
    (killed / BUILD_LOCK).touch()
    (running / BUILD_LOCK).touch()
    hours_ago = time.time() - 3 * 3600
    os.utime(old, (hours_ago, hours_ago))
    os.utime(unrelated, (hours_ago, hours_ago))
    with open(running / BUILD_LOCK) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert remove_abandoned_builds(cache) == [killed, old]
        layout = CarvanaLayout(tiny_layout)
        built = build_cache(layout, layout.train_ids, (16, 24), cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted([fresh.name, running.name, unrelated.name, Path(built.images.filename).parent.name])
    assert not (Path(built.images.filename).parent / BUILD_LOCK).exists()


def test_undecodable_photo_in_a_loader_worker_is_one_line(tiny_layout):
    layout = CarvanaLayout(tiny_layout)
    source = DecodedSource(layout, layout.train_ids, (16, 24))  # the cache is off
    photo = tiny_layout / "train" / "car001_02.jpg"
    photo.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])  # truncated: the header still reads
    # One batch of every photo: the error is the worker's only result.
    loader = DataLoader(SegmentationDataset(source, range(len(source)), train=False), batch_size=len(source), num_workers=1)

    def epoch() -> None:
        iterator = iter(loader)
        try:
            for _ in iterator:
                pass
        finally:  # here, not when the traceback is collected (the worker's join then waits 5 s)
            iterator._shutdown_workers()

    with pytest.raises(DataError) as caught:
        epoch()
    assert "DataLoader worker process" in str(caught.value)  # torch's wrapping, the worker's traceback inside
    assert worker_message(caught.value).startswith(f"cannot read image {photo}") and "\n" not in worker_message(caught.value)
    # cli.run prints the worker's line, not its traceback
    assert one_line_error_of(epoch).startswith(f"error: cannot read image {photo}")
