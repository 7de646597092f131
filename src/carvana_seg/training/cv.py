"""Run every fold of one or more experiments in turn, skipping folds already finished.

A fold is finished when its `oof/<exp>/fold<k>.json` exists; an interrupted fold resumes
from its last saved state, so re-running the same command continues a long job.
"""

from __future__ import annotations

import json

import pandas as pd

from carvana_seg.config import Config
from carvana_seg.core.paths import ExperimentPaths
from carvana_seg.training.trainer import train_fold


def train_experiments(cfgs: list[Config], folds: list[int] | None = None) -> pd.DataFrame:
    """Train the given folds (default: all) of each config; returns one row of scores per fold."""
    rows = []
    for cfg in cfgs:
        paths = ExperimentPaths.of(cfg)
        paths.claim(cfg)  # a changed config must not be skipped as "finished"
        for fold in folds if folds is not None else range(cfg.data.folds):
            if paths.oof_json(fold).is_file():
                print(f"{cfg.exp.name} fold {fold}: finished earlier ({paths.oof_json(fold)}), skipped")
                rows.append(json.loads(paths.oof_json(fold).read_text()))
                continue
            rows.append(train_fold(cfg, fold, resume=True))
    return pd.DataFrame(rows)
