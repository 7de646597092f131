"""Where an experiment's results live: one folder per experiment, as nnU-Net lays them out.
Every file of an experiment is named here, by a method of `ExperimentPaths`; nothing else
in the package spells these names.

    runs/<exp>/config.yaml                  the resolved config that made everything below
    runs/<exp>/fold<k>/model.safetensors    kept weights (+ config; last or best epoch, train.keep)
    runs/<exp>/fold<k>/model.onnx           the weights as ONNX, in an exported bundle (inference/onnx_backend.py)
    runs/<exp>/fold<k>/metrics.csv, learning_curve.png, train.log (a fold run as a task: --parallel, --ray)
    runs/<exp>/fold<k>/run.json, progress.json   what produced the fold; its progress while it trains
    runs/<exp>/fold<k>/.lock                held by the process training the fold (one writer per fold)
    runs/<exp>/fold<k>/state/               accelerate state for --resume (latest.json points at it); gone once the fold finishes (train.keep_state)
    oof/<exp>/fold<k>.npz, fold<k>.json     the fold's validation probabilities and scores
    oof/<exp>/fold<k>.tta-<views>.npz       the same images predicted again under TTA, for tuning (store/tta_oof.py)
    oof/<exp>/hist.<views>.npz              per-image level histograms at original size, for tuning (recipe/tune.py)
    oof/<exp>/worst.png                     the lowest-Dice OOF images (the leaderboard)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from carvana_seg.config import Config, ConfigError, read_saved_config, save_config
from carvana_seg.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME

FOLD_LOCK = ".lock"  # in a fold folder: held (locks.exclusive_lock) by the one process training it
ONNX_NAME = "model.onnx"  # beside the fold's weights
STATE_DIR = "state"  # in a fold folder: the resumable training state
TRAIN_LOG = "train.log"  # in a fold folder: the output of its process when it runs as a task (--parallel, --ray)
RUN_JSON = "run.json"  # in a fold folder: what produced it (training/runinfo.py)
PROGRESS_JSON = "progress.json"  # in a fold folder: rewritten after each epoch while it trains (training/progress.py)


@dataclass(frozen=True)
class ExperimentPaths:
    run_dir: Path
    oof_dir: Path | None  # None: only the run folder is known (`runs_of`)

    @classmethod
    def of(cls, cfg: Config) -> ExperimentPaths:
        return cls(Path(cfg.exp.runs_dir) / cfg.exp.name, Path(cfg.exp.oof_dir) / cfg.exp.name)

    @classmethod
    def runs_of(cls, runs_dir: str | Path, exp: str) -> ExperimentPaths:
        """The run folder of experiment `exp` under `runs_dir` before its config is read (a recipe
        member, a bundle's copy): its OOF folder is unknown until then, so it is not named."""
        return cls(Path(runs_dir) / exp, None)

    @property
    def config(self) -> Path:
        return self.run_dir / CONFIG_NAME

    def fold_dir(self, fold: int) -> Path:
        return self.run_dir / f"fold{fold}"

    def weights(self, fold: int) -> Path:
        return self.fold_dir(fold) / WEIGHTS_NAME

    def onnx(self, fold: int) -> Path:
        return self.fold_dir(fold) / ONNX_NAME

    def metrics_csv(self, fold: int) -> Path:
        return self.fold_dir(fold) / "metrics.csv"

    def learning_curve(self, fold: int) -> Path:
        return self.fold_dir(fold) / "learning_curve.png"

    def train_log(self, fold: int) -> Path:
        return self.fold_dir(fold) / TRAIN_LOG

    def run_json(self, fold: int) -> Path:
        return self.fold_dir(fold) / RUN_JSON

    def progress_json(self, fold: int) -> Path:
        return self.fold_dir(fold) / PROGRESS_JSON

    def state_dir(self, fold: int) -> Path:
        return self.fold_dir(fold) / STATE_DIR

    def fold_lock(self, fold: int) -> Path:
        return self.fold_dir(fold) / FOLD_LOCK

    def oof_npz(self, fold: int) -> Path:
        return self.oof_dir / f"fold{fold}.npz"

    def oof_json(self, fold: int) -> Path:
        return self.oof_dir / f"fold{fold}.json"

    def tta_oof_npz(self, fold: int, views: str) -> Path:
        """The fold's OOF predicted again under the TTA views labelled `views` ("hflip+scale0.75")."""
        return self.oof_dir / f"fold{fold}.tta-{views}.npz"

    def histograms_npz(self, views: str) -> Path:
        """The whole OOF's per-image level histograms at original size under the TTA views `views` ("none" without TTA)."""
        return self.oof_dir / f"hist.{views}.npz"

    @property
    def worst_png(self) -> Path:
        return self.oof_dir / "worst.png"

    def claim(self, cfg: Config) -> None:
        """Save the resolved config, or check it matches the one already saved there.

        Folds of one experiment must come from one config, or its CV score means nothing.
        `data.num_workers` and `data.use_cache` change speed only, and `train.keep_state` what is
        kept on disk, so they may differ.
        """
        if self.config.is_file():
            saved = read_saved_config(self.config)
            saved = replace(
                saved,
                data=replace(saved.data, num_workers=cfg.data.num_workers, use_cache=cfg.data.use_cache),
                train=replace(saved.train, keep_state=cfg.train.keep_state),
            )
            if saved != cfg:
                current, before = cfg.to_dict(), saved.to_dict()
                changed = [  # keys of one model family only: a changed model.name is listed too
                    f"{section}.{key}: {before[section].get(key)!r} -> {value!r}"
                    for section, values in current.items()
                    for key, value in values.items()
                    if before[section].get(key) != value
                ]
                raise ConfigError(
                    f"{self.config} holds a different config for experiment {cfg.exp.name!r} "
                    f"({'; '.join(changed)}): pick a new exp.name, or delete {self.run_dir} and {self.oof_dir}"
                )
            return
        save_config(cfg, self.config)
