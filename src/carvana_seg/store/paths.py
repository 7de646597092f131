"""Where an experiment's results live: one folder per experiment, as nnU-Net lays them out.

    runs/<exp>/config.yaml                  the resolved config that made everything below
    runs/<exp>/fold<k>/model.safetensors    kept weights (+ config; last or best epoch, train.keep), metrics.csv, learning_curve.png
    runs/<exp>/fold<k>/.lock                held by the process training the fold (one writer per fold)
    runs/<exp>/fold<k>/state/               accelerate state for --resume (latest.json points at it); gone once the fold finishes (train.keep_state)
    oof/<exp>/fold<k>.npz, fold<k>.json     the fold's validation probabilities and scores
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from carvana_seg.config import Config, ConfigError, read_saved_config, save_config

FOLD_LOCK = ".lock"  # in a fold folder: held (locks.exclusive_lock) by the one process training it


@dataclass(frozen=True)
class ExperimentPaths:
    run_dir: Path
    oof_dir: Path

    @classmethod
    def of(cls, cfg: Config) -> ExperimentPaths:
        return cls(Path(cfg.exp.runs_dir) / cfg.exp.name, Path(cfg.exp.oof_dir) / cfg.exp.name)

    @property
    def config(self) -> Path:
        return self.run_dir / "config.yaml"

    def fold_dir(self, fold: int) -> Path:
        return self.run_dir / f"fold{fold}"

    def state_dir(self, fold: int) -> Path:
        return self.fold_dir(fold) / "state"

    def fold_lock(self, fold: int) -> Path:
        return self.fold_dir(fold) / FOLD_LOCK

    def oof_npz(self, fold: int) -> Path:
        return self.oof_dir / f"fold{fold}.npz"

    def oof_json(self, fold: int) -> Path:
        return self.oof_dir / f"fold{fold}.json"

    def claim(self, cfg: Config) -> None:
        """Save the resolved config, or check it matches the one already saved there.

        Folds of one experiment must come from one config, or its CV score means nothing.
        `data.num_workers` and `data.use_cache` change speed only, and `train.keep_state` what is
        kept on disk, so they may differ.
        """
        if self.config.is_file():
            saved = read_saved_config(self.config)
            saved.data.num_workers, saved.data.use_cache = cfg.data.num_workers, cfg.data.use_cache
            saved.train.keep_state = cfg.train.keep_state
            if saved != cfg:
                current, before = cfg.to_dict(), saved.to_dict()
                changed = [
                    f"{section}.{key}: {before[section][key]!r} -> {value!r}"
                    for section, values in current.items()
                    for key, value in values.items()
                    if before[section][key] != value
                ]
                raise ConfigError(
                    f"{self.config} holds a different config for experiment {cfg.exp.name!r} "
                    f"({'; '.join(changed)}): pick a new exp.name, or delete {self.run_dir} and {self.oof_dir}"
                )
            return
        save_config(cfg, self.config)
