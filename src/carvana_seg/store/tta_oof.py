"""An experiment's whole OOF as tuning and the leaderboard read it: each fold's saved file, or
its validation images predicted again under TTA (one process, cached beside the plain file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from carvana_seg.config import Config
from carvana_seg.errors import PipelineError
from carvana_seg.store.experiment import default_device, experiment_config, load_fold_model
from carvana_seg.store.oof import OOF, ExperimentOOF, check_complete
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.models.tta import predict_probs, to_levels
from carvana_seg.data.dataset import SegmentationDataset
from carvana_seg.data.folds import read_folds
from carvana_seg.data.layouts import open_layout
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
    cached, weights = paths.tta_oof_npz(fold, tta_name), paths.weights(fold)
    if cached.is_file() and weights.is_file() and cached.stat().st_mtime >= weights.stat().st_mtime:
        return OOF.load(cached)
    layout = open_layout(cfg.data)
    folds = read_folds(cfg.data.folds_path, layout, cfg.data.folds)
    source = build_cache(layout, folds["img"].tolist(), cfg.data.size, cfg.data.cache_dir)
    val_idx = np.flatnonzero((folds["fold"] == fold).to_numpy())
    device = default_device()
    probs = predict_dataset(load_fold_model(cfg, fold, device), SegmentationDataset(source, val_idx, train=False), views, cfg.train.batch_size, device, cfg.train.precision)
    oof = OOF(np.array(source.ids)[val_idx], probs, np.array([source.original_size(int(i)) for i in val_idx]))
    oof.save(cached)
    return oof


def load_experiment_oof(exp: str, runs_dir: str | Path, views: list[str], label: str) -> ExperimentOOF:
    """Every fold's OOF of `exp`, merged and sorted by image id, checked to hold each training
    image once. `views` (`recipe/tta.parse_tta`) and their file-name `label` ("none" without
    TTA): other views than the identity re-predict each fold under them (`oof_with_tta`)."""
    cfg = experiment_config(exp, runs_dir)
    paths = ExperimentPaths.of(cfg)
    parts = []
    for fold in range(cfg.data.folds):
        if not paths.oof_npz(fold).is_file():
            raise PipelineError(f"experiment {exp!r}: {paths.oof_npz(fold)} is missing (fold {fold} not trained)")
        parts.append(OOF.load(paths.oof_npz(fold)) if label == "none" else oof_with_tta(cfg, fold, views, label))
    ids = np.concatenate([p.ids for p in parts])
    check_complete(exp, ids.tolist(), read_folds(cfg.data.folds_path, open_layout(cfg.data), cfg.data.folds)["img"].tolist())
    order = np.argsort(ids)
    merged = OOF(ids[order], np.concatenate([p.probs for p in parts])[order], np.concatenate([p.original_sizes for p in parts])[order])
    return ExperimentOOF(exp, cfg, merged)
