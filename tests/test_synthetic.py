"""The synthetic Carvana-style generator: complete layout, exact masks, deterministic."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from carvana_seg.data.layout import CarvanaLayout, read_image, split_id
from carvana_seg.data.synthetic import generate
from carvana_seg.errors import PipelineError
from carvana_seg.rle import rle_decode

SIZE = (192, 128)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("syn") / "data", cars=3, test_cars=1, size=SIZE, seed=7)


def digest(folder: Path) -> str:
    h = hashlib.sha1()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_layout_is_complete_and_masks_match(synthetic):
    layout = CarvanaLayout(synthetic)
    ids = layout.train_ids
    assert len(ids) == 48
    cars = pd.Series([split_id(i)[0] for i in ids])
    assert (cars.value_counts() == 16).all()
    rles = pd.read_csv(synthetic / "train_masks.csv").set_index("img")["rle_mask"]
    for image_id in ids:
        gif = Image.open(layout.mask_path(image_id))
        assert gif.mode == "P" and gif.size == SIZE
        mask = np.asarray(gif)
        assert set(np.unique(mask)) <= {0, 1}
        assert np.array_equal(rle_decode(rles[f"{image_id}.jpg"], mask.shape), mask)
    test_images = sorted(p.name for p in (synthetic / "test").glob("*.jpg"))
    sample = pd.read_csv(synthetic / "sample_submission.csv")
    assert sample["img"].tolist() == test_images and (sample["rle_mask"] == "1 1").all() and len(test_images) == 16
    assert list(pd.read_csv(synthetic / "metadata.csv").columns) == ["id", "year", "make", "model", "trim1", "trim2"]


def test_mask_area_like_the_real_photos(synthetic):
    layout = CarvanaLayout(synthetic)
    areas = np.array([layout.mask_area(i) for i in layout.train_ids])
    assert 0.08 < areas.min() and areas.max() < 0.35 and 0.15 < areas.mean() < 0.28  # real: 0.10 / 0.20 / 0.28


def test_shadow_is_in_the_photo_not_the_mask(synthetic):
    layout = CarvanaLayout(synthetic)
    image_id = layout.train_ids[4]
    image = read_image(layout.image_path(image_id)).astype(int).sum(axis=2)
    mask = layout.read_mask(image_id).astype(bool)
    rows = np.flatnonzero(mask.any(axis=1))
    below = image[rows[-1] + 2 : rows[-1] + 6][:, mask.any(axis=0)]  # floor just under the car
    floor = image[-3:]  # floor far from the car
    assert below.mean() < floor.mean() - 60  # a visible shadow...
    assert not mask[rows[-1] + 2 :].any()  # ...that the mask does not include


def test_deterministic_for_a_seed(tmp_path, synthetic):
    again = generate(tmp_path / "again", cars=3, test_cars=1, size=SIZE, seed=7)
    assert digest(again) == digest(synthetic)
    other = generate(tmp_path / "other", cars=3, test_cars=1, size=SIZE, seed=8)
    assert digest(other) != digest(synthetic)


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(PipelineError, match="not empty.*--force"):
        generate(tmp_path / "out", cars=1, test_cars=0, size=SIZE)
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_synthetic.py"
    result = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "out"), "--cars", "1", "--size", "96x64"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "error:" in result.stderr and "--force" in result.stderr
