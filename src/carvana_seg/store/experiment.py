"""An experiment's saved config and fold models, as every later stage loads them, and whether
a recipe's members match the runs they name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from carvana_seg.config import Config, read_saved_config
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.errors import PipelineError
from carvana_seg.models import load_checkpoint
from carvana_seg.models.fold_bn import fold_batchnorm


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def experiment_config(exp: str, runs_dir: str | Path = "runs") -> Config:
    """The resolved config an experiment was trained with (runs/<exp>/config.yaml)."""
    path = ExperimentPaths.runs_of(runs_dir, exp).config
    if not path.is_file():
        raise PipelineError(f"experiment {exp!r}: {path} not found (train it with scripts/train_cv.py first)")
    return read_saved_config(path)


def member_configs(members: Sequence, source: str) -> list[Config]:
    """The config each recipe member's runs were trained with, once every member is found to
    match its runs: its experiment's config exists (`experiment_config`) and its fold count
    is at most the experiment's. `members`: each with .exp, .runs_dir and .folds (a recipe's);
    `source` names the recipe in the error. Predict, export and the leaderboard ask this
    before they read a model or a photo, so a missing run is named first, not midway.
    Each config's `exp.runs_dir` is the member's: where the recipe found the run (a bundle's
    copy, say), not where it was trained."""
    configs = []
    for k, member in enumerate(members):
        cfg = experiment_config(member.exp, member.runs_dir)
        trained = cfg.data.folds
        if member.folds > trained:
            raise PipelineError(
                f"{source}: members[{k}].folds: {member.folds} is more than the {trained} folds experiment {member.exp!r} has (1..{trained})"
            )
        configs.append(replace(cfg, exp=replace(cfg.exp, runs_dir=str(member.runs_dir))))
    return configs


def fold_weights(cfg: Config, fold: int) -> Path:
    """The fold's kept weights; a missing file is an error that names it."""
    path = ExperimentPaths.of(cfg).weights(fold)
    if not path.is_file():
        raise PipelineError(f"{cfg.exp.name} fold {fold}: no weights at {path}")
    return path


def load_fold_model(cfg: Config, fold: int, device: torch.device) -> torch.nn.Module:
    """The fold's network ready to predict: eval mode, BatchNorms folded into their convolutions."""
    model, _ = load_checkpoint(fold_weights(cfg, fold))
    return fold_batchnorm(model.eval()).to(device, memory_format=torch.channels_last)
