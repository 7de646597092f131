"""Every GPU recipe in configs/carvana_gpu/ loads and trains one tiny epoch end to end on CPU.

The recipes are sized for one large GPU (bf16, 640x960 or full frames); here each runs with the same
model family, block, loss, soft masks and schedule at 32x48 in fp32, with U-Nets narrowed to
base 8 and smp encoders swapped for ResNet-18 (each shipped model is also built, on the meta
device), so a broken key, a bad combination or a model that cannot build fails in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_tiny_layout

from carvana_seg.config import load_config
from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.models import build_model
from carvana_seg.models.stats import count_parameters
from carvana_seg.training.trainer import train_fold

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIGS = sorted(p for p in (REPO / "configs" / "carvana_gpu").rglob("*.yaml") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = write_tiny_layout(tmp_path_factory.mktemp("gpu") / "data", cars=4, angles=4, hw=(48, 72))
    write_folds(make_folds(CarvanaLayout(root), 2, seed=0), root / "folds.csv")
    return root


def test_the_gpu_recipes_and_the_ablation_set_are_there():
    names = {p.relative_to(REPO / "configs" / "carvana_gpu").as_posix() for p in GPU_CONFIGS}
    assert {"smp_unet_r34_640.yaml", "unet_res_640_shuffle.yaml"} <= names
    for path in GPU_CONFIGS:  # each model as shipped builds (on the meta device: no memory, no time)
        with torch.device("meta"):
            assert count_parameters(build_model(load_config(path).model)) > 1_000_000, path
    ablation = {load_config(p).model.block if load_config(p).model.name == "unet" else load_config(p).model.arch
                for p in GPU_CONFIGS if p.parent.name == "ablation"}
    assert ablation == {"plain", "se", "res", "res_se", "Unet", "FPN"}


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.relative_to(REPO / "configs" / "carvana_gpu").as_posix())
def test_gpu_config_trains_one_tiny_epoch(tmp_path, data_root, path):
    recipe = load_config(path)
    assert recipe.train.precision == "bf16" and getattr(recipe.model, "encoder_weights", None) is None  # as shipped: bf16, no downloads
    # narrower U-Nets, a lighter smp encoder: seconds on CPU (each a setting of its own model family)
    lighter = "model.base_channels=8" if recipe.model.name == "unet" else "model.encoder=resnet18"
    cfg = load_config(path, [
        f"data.root={data_root}", f"data.folds_file={data_root / 'folds.csv'}", "data.folds=2", "data.size=32x48",
        "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}", f"exp.runs_dir={tmp_path / 'runs'}",
        f"exp.oof_dir={tmp_path / 'oof'}", "train.epochs=1", "train.precision=no", "train.batch_size=4",
        lighter,
    ])
    scores = train_fold(cfg, fold=0)
    assert scores["epochs"] == 1 and scores["images"] == 8 and 0 <= scores["dice"] <= 1
