"""Run every fold of one or more experiments in turn, skipping folds already finished.

A fold is finished when its `oof/<exp>/fold<k>.json` exists; an interrupted fold resumes
from its last saved state, so re-running the same command continues a long job. Under DDP
(`accelerate launch`, `torchrun`) every process runs this loop with the one Accelerator of
session.py; only the main process returns the scores, so only it prints a summary.
"""

from __future__ import annotations

import json

import pandas as pd

from carvana_seg.config import Config
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.training.session import process_accelerator
from carvana_seg.data.layouts import with_data_channels
from carvana_seg.training.trainer import check_inputs, train_fold


def fold_list(cfg: Config, folds: list[int] | None) -> list[int]:
    return list(folds) if folds is not None else list(range(cfg.data.folds))


def train_experiments(cfgs: list[Config], folds: list[int] | None = None) -> pd.DataFrame:
    """Train the given folds (default: all) of each config; returns one row of scores per fold
    on the main process, an empty table on the others."""
    resolved = []
    for cfg in cfgs:  # every input of every experiment first: a bad one claims no name
        layout, _ = check_inputs(cfg, fold_list(cfg, folds))
        resolved.append(with_data_channels(cfg, layout))  # the input channels, as train_fold claims them
        accelerator = process_accelerator(cfg)  # and one precision for all of them
    cfgs, rows = resolved, []
    for cfg in cfgs:
        paths = ExperimentPaths.of(cfg)
        paths.claim(cfg)  # a changed config must not be skipped as "finished"
        for fold in fold_list(cfg, folds):
            if paths.oof_json(fold).is_file():
                accelerator.print(f"{cfg.exp.name} fold {fold}: finished earlier ({paths.oof_json(fold)}), skipped")
                rows.append(json.loads(paths.oof_json(fold).read_text()))
                continue
            rows.append(train_fold(cfg, fold, resume=True))
    return pd.DataFrame(rows if accelerator.is_main_process else [])
