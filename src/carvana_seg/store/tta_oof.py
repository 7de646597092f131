"""Predict an experiment's validation images again under TTA (one process), for tuning."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from carvana_seg.config import Config
from carvana_seg.store.experiment import default_device, load_fold_model
from carvana_seg.store.oof import OOF
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.models.tta import predict_probs, to_levels
from carvana_seg.data.dataset import SegmentationDataset
from carvana_seg.data.folds import read_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.data.sources import build_cache


def predict_dataset(model: torch.nn.Module, dataset: SegmentationDataset, views: list[str], batch_size: int, device: torch.device, precision: str = "no") -> np.ndarray:
    """uint8 probability levels for every sample of `dataset`, in its order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    out = []
    for batch in tqdm(loader, desc="predicting", leave=False, disable=None):
        out.append(to_levels(predict_probs(model, batch["image"].to(device, non_blocking=True), views, precision)).cpu().numpy())
    return np.concatenate(out)


def oof_with_tta(cfg: Config, fold: int, views: list[str], tta_name: str) -> OOF:
    """The fold's validation predictions under TTA, cached beside the plain OOF file."""
    paths = ExperimentPaths.of(cfg)
    cached = paths.oof_dir / f"fold{fold}.tta-{tta_name}.npz"
    weights = paths.fold_dir(fold) / "model.safetensors"
    if cached.is_file() and weights.is_file() and cached.stat().st_mtime >= weights.stat().st_mtime:
        return OOF.load(cached)
    layout = CarvanaLayout(cfg.data.root)
    folds = read_folds(cfg.data.folds_path, layout, cfg.data.folds)
    source = build_cache(layout, folds["img"].tolist(), cfg.data.hw, cfg.data.cache_dir)
    val_idx = np.flatnonzero((folds["fold"] == fold).to_numpy())
    device = default_device()
    probs = predict_dataset(load_fold_model(cfg, fold, device), SegmentationDataset(source, val_idx, train=False), views, cfg.train.batch_size, device, cfg.train.precision)
    oof = OOF(np.array(source.ids)[val_idx], probs, np.array([source.original_size(int(i)) for i in val_idx]))
    oof.save(cached)
    return oof
