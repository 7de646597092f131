"""Removing what an experiment left on disk: all of it, or only the finished folds' resume state.

Why: a fold's resume state (`runs/<exp>/fold<k>/state/`: weights, optimizer, RNG) is two to
three times the size of its kept weights (AdamW keeps two moments per weight) and is useless
once the fold is finished. Training drops it when a fold finishes (unless
`train.keep_state=true`); `finished_states` finds what older runs left. Names are checked as
plain names first, so `--exp ../x` removes nothing.

Only what is named goes, and only real folders: `--exp NAME` is refused when the config saved in
runs/NAME is for other folders (a copy made with `cp -a runs/a runs/a_backup` names runs/a; the
saved config's relative folders are read from where training ran, told from the runs folder
given, so a clean run from elsewhere with absolute folders is not taken for a copy), when
runs/NAME, oof/NAME or anything inside them is a symbolic link (removing through it would delete
what lies elsewhere; the runs and OOF folders given may be links), and while a fold's trainer
holds its lock (`fold<k>/.lock`, taken with locks.exclusive_lock).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from carvana_seg.config import Config, read_saved_config
from carvana_seg.store.experiment import experiment_config
from carvana_seg.store.paths import FOLD_LOCK, STATE_DIR, ExperimentPaths
from carvana_seg.errors import PipelineError
from carvana_seg.locks import holder
from carvana_seg.names import check_plain_name

FOLD_DIR = re.compile(r"fold\d+")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _refuse_links(folder: Path, base: Path) -> None:
    """Refuse when `folder`, a folder between `base` and it, or anything inside it is a symbolic
    link: removing through a link deletes what lies elsewhere. `base` itself may be a link."""
    parts = folder.relative_to(base).parts
    inside = (Path(top, name) for top, dirs, files in os.walk(folder) for name in dirs + files)
    for path in [*(base.joinpath(*parts[: i + 1]) for i in range(len(parts))), *inside]:
        if path.is_symlink():
            raise PipelineError(f"{path} is a symbolic link: clean never removes through links; remove or replace the link by hand")


def _same(a: Path, b: Path) -> bool:
    return a.name == b.name and a.parent.resolve() == b.parent.resolve()  # the runs / OOF folder itself may be a link


def _training_folder(saved_runs: str, runs_dir: Path) -> Path:
    """Where training ran, told from the runs folder given: that folder less the saved relative
    runs_dir at its end (`/abs/runs` for `runs`: `/abs`). The current folder when it does not
    end so (a renamed folder) or the saved runs_dir is absolute."""
    saved = Path(os.path.normpath(saved_runs))
    tail = () if saved == Path(".") else saved.parts
    given = Path(os.path.abspath(runs_dir)).parts  # not resolved: a runs folder that is a link keeps its name
    if saved.is_absolute() or ".." in tail or len(given) <= len(tail) or given[len(given) - len(tail):] != tail:
        return Path()
    return Path(*given[: len(given) - len(tail)])


def _saved_paths(cfg: Config, run_dir: Path) -> ExperimentPaths:
    """The folders named by the config saved in `run_dir`. Its relative folders are relative to
    where training ran: the current folder, or (when that does not give `run_dir`: clean run from
    elsewhere) the folder `_training_folder` tells from the runs folder given."""
    for base in dict.fromkeys([Path(), _training_folder(cfg.exp.runs_dir, run_dir.parent)]):
        saved = ExperimentPaths(base / cfg.exp.runs_dir / cfg.exp.name, base / cfg.exp.oof_dir / cfg.exp.name)
        if _same(saved.run_dir, run_dir):
            break
    return saved


def _names_other_folders(cfg: Config, paths: ExperimentPaths) -> str | None:
    """Why the config saved in `paths.run_dir` is not this folder's (None when it is): it names
    another experiment (a copied folder: its exp.name is not the folder's), runs folder or OOF
    folder."""
    saved = _saved_paths(cfg, paths.run_dir)
    if _same(saved.run_dir, paths.run_dir) and _same(saved.oof_dir, paths.oof_dir):
        return None
    return f"its saved config is for {saved.run_dir} and {saved.oof_dir}, not {paths.run_dir} and {paths.oof_dir}"


def experiment_folders(exp: str, runs_dir: str | Path = "runs", oof_dir: str | Path = "oof") -> list[Path]:
    """The existing folders of experiment `exp`: exactly <runs_dir>/<exp> and <oof_dir>/<exp>,
    once its saved config is found to name these very folders and none of them is a link."""
    check_plain_name(exp, "--exp")
    runs_dir, oof_dir = Path(runs_dir), Path(oof_dir)
    paths = ExperimentPaths(runs_dir / exp, oof_dir / exp)
    _refuse_links(paths.run_dir, runs_dir)  # before its config is read through it
    other = _names_other_folders(experiment_config(exp, runs_dir), paths)  # an unknown name is an error naming the file
    if other:
        raise PipelineError(
            f"{paths.config}: {other}; clean removes only the folders it is named: "
            "give the matching --runs-dir and --oof-dir, or remove a copied folder by hand"
        )
    folders = [p for p in (paths.run_dir, paths.oof_dir) if p.exists() or p.is_symlink()]
    for folder, base in zip(folders, (runs_dir, oof_dir)):
        _refuse_links(folder, base)
        if not folder.is_dir():
            raise PipelineError(f"{folder} is not a folder: clean removes only experiment folders; remove it by hand")
    return folders


def _saved_experiments(runs_dir: Path) -> Iterator[tuple[ExperimentPaths, Config, str | None]]:
    """Each runs/<name> with a saved config: its folders (OOF as its config names it), the
    config, and why the config is not this folder's (None when it is)."""
    for config in sorted(runs_dir.glob("*/config.yaml")):
        cfg = read_saved_config(config)
        paths = ExperimentPaths(config.parent, _saved_paths(cfg, config.parent).oof_dir)
        yield paths, cfg, _names_other_folders(cfg, paths)


def finished_states(runs_dir: str | Path = "runs") -> list[Path]:
    """`state/` folders of folds that are finished (their oof/<exp>/fold<k>.json exists), in
    experiments whose saved config names their own folder; none reached through a link."""
    found = []
    for paths, cfg, other in _saved_experiments(Path(runs_dir)):
        if not other:
            found += [paths.state_dir(k) for k in range(cfg.data.folds) if paths.state_dir(k).is_dir() and paths.oof_json(k).is_file()]
    for state in found:
        _refuse_links(state, Path(runs_dir))
    return found


def foreign_experiments(runs_dir: str | Path = "runs") -> list[str]:
    """One line per runs/<name> that `finished_states` leaves alone because its saved config names other folders."""
    return [f"keeping {paths.run_dir}: {other}" for paths, _, other in _saved_experiments(Path(runs_dir)) if other]


def _fold_dirs(folder: Path) -> list[Path]:
    if folder.name == STATE_DIR:
        return [folder.parent]
    return sorted(p for p in folder.iterdir() if FOLD_DIR.fullmatch(p.name) and p.is_dir())


def refuse_folds_in_training(folders: list[Path]) -> None:
    """Refuse, naming the trainer, when a fold folder in `folders` (or holding a `state/` among
    them) is being trained: its lock is held by a live process. Only probed, so a lock left by a
    dead trainer stays as it was."""
    for fold in [f for folder in folders for f in _fold_dirs(folder)]:
        lock = fold / FOLD_LOCK
        who = holder(lock)
        if who:
            raise PipelineError(
                f"{lock}: {fold.name} of experiment {fold.parent.name!r} is being trained by {who}: "
                "clean removes nothing while it runs; wait for it to finish or stop it first"
            )


def remove(folders: list[Path]) -> int:
    """Delete `folders`; returns the bytes freed."""
    freed = 0
    for folder in folders:
        freed += folder_bytes(folder)
        shutil.rmtree(folder)
    return freed
