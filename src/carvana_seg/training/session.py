"""The process's one Accelerator: made by the first fold, reused by every later fold, ended once.

accelerate keeps the process group, the mixed precision and the compile backend in
process-wide state, and `Accelerator.end_training` destroys the process group. A K-fold run
under DDP (`accelerate launch` or `torchrun ... scripts/train_cv.py`) that ended an
Accelerator per fold could not start its second fold, so a fold borrows this one
(`process_accelerator`), resets what belongs to the fold (`begin_fold`: the previous fold's
prepared objects are freed, the logging folder and trackers are the fold's) and hands it back
(`end_fold`); `end_process` ends it, and the process group, once (as accelerate's
`examples/by_feature/cross_validation.py` does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, TorchDynamoPlugin

from carvana_seg.config import Config, ConfigError
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.training.tracking import build_trackers

_ACCELERATOR: Accelerator | None = None


def process_accelerator(cfg: Config) -> Accelerator:
    """This process's Accelerator, set up for `cfg`'s run.

    Mixed precision is fixed for the life of a process by accelerate: an experiment that asks
    for another one is refused (run it in its own command). Gradient accumulation, the data
    seed and the compile backend are set again for each experiment.
    """
    global _ACCELERATOR
    if _ACCELERATOR is None:
        _ACCELERATOR = Accelerator(mixed_precision=cfg.train.precision)
    accelerator = _ACCELERATOR
    if accelerator.mixed_precision != cfg.train.precision:
        raise ConfigError(
            f"train.precision: {cfg.exp.name!r} asks for {cfg.train.precision!r} but this process already trains with "
            f"{accelerator.mixed_precision!r} (accelerate fixes it per process): train it in a separate command"
        )
    accelerator.gradient_accumulation_steps = cfg.train.grad_accum
    accelerator.dataloader_config = DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed, non_blocking=True)
    # inductor when asked; otherwise accelerate's own config (ACCELERATE_DYNAMO_BACKEND) decides
    accelerator.state.dynamo_plugin = TorchDynamoPlugin(backend="inductor" if cfg.train.compile else None)
    return accelerator


def begin_fold(accelerator: Accelerator, cfg: Config, fold: int, fold_dir: Path, keep_through_step: int) -> None:
    """Free what the previous fold prepared and start this fold's trackers in its own folder."""
    accelerator.free_memory()
    accelerator.project_configuration = ProjectConfiguration(project_dir=str(fold_dir))
    accelerator.log_with = build_trackers(cfg.train.trackers, ExperimentPaths.of(cfg).metrics_csv(fold), keep_through_step)
    accelerator.trackers = []
    accelerator.init_trackers(f"{cfg.exp.name}-fold{fold}", config={"fold": fold, "exp": cfg.exp.name})


def end_fold(accelerator: Accelerator) -> None:
    """Close the fold's trackers and release its model, optimizer and loaders; the process group
    stays. No barrier here: after an error the other processes may never arrive."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []
    accelerator.free_memory()


def end_process() -> None:
    """End the Accelerator (and under DDP the process group) once, when the process is done."""
    global _ACCELERATOR
    if _ACCELERATOR is not None:
        _ACCELERATOR.end_training()
        _ACCELERATOR = None


@contextlib.contextmanager
def training_process() -> Iterator[None]:
    """Wrap a script's training: the Accelerator is ended once at the end, also on an error."""
    try:
        yield
    finally:
        end_process()
