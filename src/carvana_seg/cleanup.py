"""Removing what an experiment left on disk: all of it, or only the finished folds' resume state.

Why: a fold's resume state (`runs/<exp>/fold<k>/state/`: weights, optimizer, RNG) is two to
three times the size of its kept weights and is useless once the fold is finished (an smp FPN
fold: 52 MB of weights, 150 MB of state; `runs/` reached 2.3 GB after two demos). Training
drops it when a fold finishes (unless `train.keep_state=true`); `drop_finished_states` clears
what older runs left. Names are checked as plain names first, so `--exp ../x` removes nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from carvana_seg.core.experiment import experiment_config
from carvana_seg.core.paths import ExperimentPaths
from carvana_seg.names import check_plain_name


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def experiment_folders(exp: str, runs_dir: str | Path = "runs") -> list[Path]:
    """The existing folders of experiment `exp` (runs/<exp>, and its OOF folder from its saved config)."""
    check_plain_name(exp, "--exp")
    paths = ExperimentPaths.of(experiment_config(exp, runs_dir))  # an unknown name is an error naming the file
    return [p for p in (paths.run_dir, paths.oof_dir) if p.is_dir()]


def finished_states(runs_dir: str | Path = "runs") -> list[Path]:
    """`state/` folders of folds that are finished (their oof/<exp>/fold<k>.json exists)."""
    found = []
    for config in sorted(Path(runs_dir).glob("*/config.yaml")):
        cfg = experiment_config(config.parent.name, runs_dir)
        paths = ExperimentPaths.of(cfg)
        found += [paths.state_dir(k) for k in range(cfg.data.folds) if paths.state_dir(k).is_dir() and paths.oof_json(k).is_file()]
    return found


def remove(folders: list[Path]) -> int:
    """Delete `folders`; returns the bytes freed."""
    freed = 0
    for folder in folders:
        freed += folder_bytes(folder)
        shutil.rmtree(folder)
    return freed
