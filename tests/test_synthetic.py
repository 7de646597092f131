"""The synthetic Carvana-style generator: complete layout, exact masks, real-like statistics, deterministic."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from conftest import REPO

from carvana_seg.data import synthetic
from carvana_seg.data.layout import CarvanaLayout, DataError
from carvana_seg.data.synthetic import generate
from carvana_seg.errors import PipelineError
from carvana_seg.ops.rle import rle_decode

SIZE = (192, 128)  # width, height: about 10 ms per photo
CARS, TEST_CARS, SEED = 3, 1, 7
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_synthetic.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("syn") / "data", cars=CARS, test_cars=TEST_CARS, size=SIZE, seed=SEED)


def digest(folder: Path) -> str:
    h = hashlib.sha1()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def train_photos(data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(photo HxWx3, mask HxW) for every train image."""
    pairs = []
    for photo in sorted((data / "train").glob("*.jpg")):
        mask = data / "train_masks" / f"{photo.stem}_mask.gif"
        pairs.append((np.asarray(Image.open(photo).convert("RGB")), np.asarray(Image.open(mask))))
    return pairs


def test_layout_is_complete_and_consistent(data):
    stems = sorted(p.stem for p in (data / "train").glob("*.jpg"))
    cars = pd.Series([s.rsplit("_", 1)[0] for s in stems])
    assert len(stems) == CARS * 16 and (cars.value_counts() == 16).all()
    assert all(re.fullmatch(r"[0-9a-f]{12}_(0[1-9]|1[0-6])", s) for s in stems)
    rles = pd.read_csv(data / "train_masks.csv", dtype=str, keep_default_na=False)
    assert rles["img"].tolist() == [f"{s}.jpg" for s in stems]
    for stem, rle in zip(stems, rles["rle_mask"]):
        gif = Image.open(data / "train_masks" / f"{stem}_mask.gif")
        assert gif.mode == "P" and gif.getpalette()[:6] == [0, 0, 0, 255, 255, 255]
        assert gif.size == Image.open(data / "train" / f"{stem}.jpg").size == SIZE
        mask = np.asarray(gif)
        assert set(np.unique(mask)) == {0, 1}
        assert np.array_equal(rle_decode(rle, (SIZE[1], SIZE[0])), mask)

    test_images = sorted(p.name for p in (data / "test").glob("*.jpg"))
    sample = pd.read_csv(data / "sample_submission.csv", dtype=str)
    assert len(test_images) == TEST_CARS * 16 and sample["img"].tolist() == test_images
    assert (sample["rle_mask"] == "1 1").all()
    assert not set(cars) & {name.rsplit("_", 1)[0] for name in test_images}

    metadata = pd.read_csv(data / "metadata.csv", dtype=str, keep_default_na=False)
    assert list(metadata.columns) == ["id", "year", "make", "model", "trim1", "trim2"]
    assert set(metadata["id"]) == set(cars) | {name.rsplit("_", 1)[0] for name in test_images}
    assert (data / "metadata.csv").read_text().startswith('"id","year","make","model","trim1","trim2"\n')


def test_mask_area_like_the_real_photos(data):
    """Real masks (768 photos): mean 0.207, 5-95% 0.14-0.30, min 0.10, max 0.37; side views largest."""
    areas = np.array([mask.mean() for _, mask in train_photos(data)]).reshape(CARS, 16)
    assert 0.08 < areas.min() and areas.max() < 0.37 and 0.16 < areas.mean() < 0.26
    sides, ends = areas[:, [4, 12]].mean(axis=1), areas[:, [0, 8]].mean(axis=1)  # 05/13 vs 01/09
    assert (sides > ends * 1.15).all()


def test_shadow_is_in_the_photo_not_the_mask(data):
    """Just below the car's lowest pixel in each column the floor is much darker (the shadow) yet mask 0."""
    height = SIZE[1]
    band = max(2, height // 40)
    for photo, mask in train_photos(data):
        lum = photo.astype(float).mean(axis=2)
        cols = np.flatnonzero(mask.any(axis=0))
        lowest = height - 1 - np.argmax(mask[::-1, cols], axis=0)
        under = np.array([lum[y + 1 : y + 1 + band, c].mean() for y, c in zip(lowest, cols)])
        assert not any(mask[y + 1 :, c].any() for y, c in zip(lowest, cols))
        assert np.median(under) < np.median(lum[-band:]) - 50  # open floor at the bottom is far lighter


def test_thin_parts_are_in_the_mask():
    """The antenna tip and the near mirror's outer end project onto mask pixels."""
    size = (480, 320)
    rng = np.random.default_rng(0)
    spec = dataclasses.replace(synthetic.sample_car(rng), antenna=True)
    car = synthetic.build_car(spec)
    angle = 5  # left side: the left (+y) mirror faces the camera
    _, mask = synthetic.render_view(car, synthetic.make_studio(size, rng), angle)
    camera = synthetic.camera_for_angle(angle, size)
    mirror_tip = np.array([[spec.x_windshield - 0.18, spec.width / 2 + 0.16, spec.belt + 0.10]])
    for point in (car.antenna[1] - 0.02 * (car.antenna[1] - car.antenna[0]), mirror_tip[0]):
        (u, v), = camera.project(point[None])
        assert mask[int(v) - 1 : int(v) + 2, int(u) - 1 : int(u) + 2].any()
    assert car.antenna[1][2] > spec.roof + 0.3  # the tip really sticks out above the roof


def test_deterministic_for_a_seed(tmp_path, data):
    again = generate(tmp_path / "again", cars=CARS, test_cars=TEST_CARS, size=SIZE, seed=SEED)
    assert digest(again) == digest(data)
    other = generate(tmp_path / "other", cars=CARS, test_cars=TEST_CARS, size=SIZE, seed=SEED + 1)
    photos = {p.read_bytes() for p in (data / "train").glob("*.jpg")}
    assert not photos & {p.read_bytes() for p in (other / "train").glob("*.jpg")}


def test_refuses_a_non_empty_folder_unless_forced(tmp_path):
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    (out / "train" / "stale_01.jpg").write_bytes(b"old")
    with pytest.raises(PipelineError, match=f"{re.escape(str(out))} is not empty.*--force"):
        generate(out, cars=1, test_cars=0, size=SIZE)
    cli = [sys.executable, str(SCRIPT), "--out", str(out), "--cars", "1", "--test-cars", "0", "--size", "96x64"]
    refused = subprocess.run(cli, capture_output=True, text=True)
    assert refused.returncode == 1 and "error:" in refused.stderr
    assert str(out) in refused.stderr and "--force" in refused.stderr
    forced = subprocess.run([*cli, "--force"], capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr
    assert (out / "keep.txt").read_text() == "mine" and not (out / "train" / "stale_01.jpg").exists()
    photos = sorted((out / "train").glob("*.jpg"))
    assert len(photos) == 16 and Image.open(photos[0]).size == (96, 64)


def test_size_is_width_by_height():
    assert synthetic.parse_size("1918x1280") == (1918, 1280)
    with pytest.raises(PipelineError, match="WIDTHxHEIGHT"):
        synthetic.parse_size("1918")


def test_failed_generation_leaves_no_folder(tmp_path, monkeypatch):
    calls = []
    real_write_car = synthetic.writer._write_car

    def fail_on_second_car(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real_write_car(*args, **kwargs)

    monkeypatch.setattr(synthetic.writer, "_write_car", fail_on_second_car)
    with pytest.raises(RuntimeError):
        synthetic.generate(tmp_path / "out", cars=2, test_cars=0, size=(48, 32))
    assert list(tmp_path.iterdir()) == []


def test_killed_generator_leaves_only_a_hidden_partial_folder(tmp_path):
    out = tmp_path / "synthetic"
    proc = subprocess.Popen([sys.executable, "scripts/make_synthetic.py", "--out", str(out), "--cars", "300",
                             "--test-cars", "0", "--size", "48x32"], cwd=REPO, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".synthetic.*.partial/train/*.jpg")) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [p.name.endswith(".partial") and p.name.startswith(".") for p in tmp_path.iterdir()] == [True]
    assert not out.exists()
    with pytest.raises(DataError, match="does not exist"):
        CarvanaLayout(out)
