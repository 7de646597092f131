"""Train one fold with Hugging Face Accelerate and write its out-of-fold predictions.

The same code runs on one CPU process, on a GPU with AMP, or under DDP
(`accelerate launch`, `torchrun`). `train_fold` checks the inputs before it writes anything,
borrows the process's Accelerator (session.py) and records the run (run.json); read `_fit` top
to bottom: build, then per epoch train, validate on the fold's held-out cars (every
`train.val_every` epochs), keep the last or the best epoch's weights and OOF predictions,
save a resumable state (resume.py).

`train.keep=last` is the default because choosing the epoch by its score on the very images
that form the OOF set makes the CV optimistic, and on a fold with one odd car it picks an
under-trained model for all the others (benchmarks/results/carvana_cpu.md).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.scheduler import AcceleratedScheduler
from accelerate.utils import set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from carvana_seg.config import SCHEDULE_CHOICES, Config, ConfigError
from carvana_seg.ops.metrics import HALF, dice_by_level, dice_per_image
from carvana_seg.store.oof import OOF
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.recipe.chain import oof_histograms
from carvana_seg.recipe.recipe import Recipe
from carvana_seg.models.tta import predict_probs, to_levels
from carvana_seg.data.dataset import SegmentationDataset
from carvana_seg.data.folds import read_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.data.layouts import open_layout, with_data_channels
from carvana_seg.data.sources import CachedSource, DecodedSource, build_cache, covered
from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_write_text
from carvana_seg.models import build_model, check_encoder_weights, save_checkpoint
from carvana_seg.models.describe import describe_model
from carvana_seg.models.stats import count_parameters
from carvana_seg.training.losses import build_loss
from carvana_seg.training.progress import write_progress
from carvana_seg.training.lifecycle import Interrupted, fold_writer, raise_if_stopped
from carvana_seg.training.resume import TrainerState, load_resume_state, save_resume_state
from carvana_seg.training.runinfo import RunRecord
from carvana_seg.training.session import begin_fold, end_fold, process_accelerator
from carvana_seg.training.tracking import check_trackers, plot_learning_curve

ONECYCLE_WARMUP_FRACTION, ONECYCLE_START_DIV, ONECYCLE_END_DIV = 0.3, 25.0, 1e4
ETA_AFTER_STEPS = 3  # the ETA line comes after this many steps of a session's first epoch (the first step warms up)


class NonFiniteLossError(PipelineError):
    """The loss became NaN or infinite: the run stops instead of training on garbage."""


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base LR at an optimizer step: warmup, then cosine decay."""
    if schedule == "onecycle":
        warmup_steps = max(1, int(ONECYCLE_WARMUP_FRACTION * total_steps))
        start, end = 1 / ONECYCLE_START_DIV, 1 / ONECYCLE_END_DIV
    elif schedule == "cosine":
        start, end = 0.0, 0.0
    else:  # a loaded config holds one of SCHEDULE_CHOICES (config.validate)
        raise ValueError(f"unknown schedule {schedule!r}; available: {', '.join(SCHEDULE_CHOICES)}")
    if step < warmup_steps:
        return start + (1 - start) * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))


def check_inputs(cfg: Config, folds: Iterable[int]) -> tuple[CarvanaLayout, pd.DataFrame]:
    """The dataset and its folds table, checked before a run writes anything.

    A run that fails here must not have claimed its experiment name (runs/<exp>/config.yaml)
    or made a fold folder: the corrected rerun under the same name would be refused.
    """
    check_trackers(cfg.train.trackers)  # installed here: what loading the config (config.validate) cannot know
    for fold in folds:
        if not 0 <= fold < cfg.data.folds:
            raise ConfigError(f"--fold {fold}: must be in 0..{cfg.data.folds - 1} (data.folds={cfg.data.folds})")
    check_encoder_weights(cfg.model)
    layout = open_layout(cfg.data)
    table = read_folds(cfg.data.folds_path, layout, cfg.data.folds)
    layout.check_train(table["img"].tolist())  # every photo's and mask's header
    return layout, table


def dataset_source(cfg: Config, layout: CarvanaLayout, folds: pd.DataFrame) -> CachedSource | DecodedSource:
    """The resized training images: the cache (built here if missing) or decoded on demand.

    Only one process may build a cache: callers run this on the main process first
    (`main_process_first`), and `train_cv.py --parallel` runs it before starting any fold.
    """
    ids = folds["img"].tolist()
    if cfg.data.use_cache:
        return build_cache(layout, ids, cfg.data.size, cfg.data.cache_dir, workers=max(1, cfg.data.num_workers))
    return DecodedSource(layout, ids, cfg.data.size)


def predict_loader(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, views: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (uint8 levels) and source indices of every sample, gathered on all processes.

    `gather_for_metrics` drops the samples the distributed sampler repeats to even out the
    last batch, so each image appears exactly once.
    """
    model.eval()
    indices, probs = [], []
    for batch in loader:
        levels = to_levels(predict_probs(model, batch["image"], views))
        index, levels = accelerator.gather_for_metrics((batch["index"], levels))
        indices.append(index.cpu().numpy())
        probs.append(levels.cpu().numpy())
    return np.concatenate(indices), np.concatenate(probs)


def train_fold(cfg: Config, fold: int, resume: bool = False, stop_after_epoch: int | None = None, restart: bool = False) -> dict:
    """Train one fold; returns its scores (also written to oof/<exp>/fold<k>.json) on the main
    process, {} on the others and when the run stops before its last epoch.

    A fold with saved state is continued with `resume` or deleted and retrained with `restart`;
    asking for neither is refused, as is a second process training the same fold
    (lifecycle.fold_writer). The process's Accelerator (session.py) is borrowed, not ended: a
    K-fold run under DDP trains its next fold in the same process group.
    """
    if resume and restart:
        raise PipelineError("--resume and --restart exclude each other: continue the saved state, or start the fold over")
    layout, folds = check_inputs(cfg, [fold])  # before anything is written
    cfg = with_data_channels(cfg, layout)  # the saved config holds the network's input channels
    paths = ExperimentPaths.of(cfg)
    accelerator = process_accelerator(cfg)
    set_seed(cfg.train.seed)
    with accelerator.main_process_first():  # one process builds the cache, the others reuse it
        source = dataset_source(cfg, layout, folds)
    paths.claim(cfg)  # on every process: a refused config must stop all of them, not leave some waiting
    with fold_writer(accelerator, cfg, fold, resume, restart) as saved:
        return _train_held_fold(cfg, fold, accelerator, layout, source, folds, saved, resume, stop_after_epoch)


def _train_held_fold(
    cfg: Config, fold: int, accelerator: Accelerator, layout: CarvanaLayout, source: CachedSource | DecodedSource,
    folds: pd.DataFrame, saved: dict | None, resume: bool, stop_after_epoch: int | None,
) -> dict:
    """`train_fold` once this process is the fold's writer: the run record, `_fit`, the clean-up."""
    paths = ExperimentPaths.of(cfg)
    fold_dir, state_root = paths.fold_dir(fold), paths.state_dir(fold)
    previous = saved["epoch"] if saved else -1  # metrics.csv rows to keep on resume
    if accelerator.is_main_process:
        fold_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    begin_fold(accelerator, cfg, fold, fold_dir, keep_through_step=previous)
    record = None
    if accelerator.is_main_process:
        record = RunRecord(fold_dir, accelerator.device, accelerator.num_processes, accelerator.mixed_precision, max(previous, 0) + 1)
    state = TrainerState()
    try:
        scores = _fit(cfg, fold, accelerator, layout, source, folds, state, resume, stop_after_epoch)
    except BaseException as err:
        if record is not None:
            record.finish("interrupted" if isinstance(err, Interrupted) else "failed", state.epoch, error=f"{type(err).__name__}: {err}")
        end_fold(accelerator)
        raise
    if record is not None:
        record.finish("finished" if scores else "stopped", state.epoch)
    accelerator.wait_for_everyone()
    if scores and not cfg.train.keep_state:  # finished (main process): resuming it is never needed again
        shutil.rmtree(state_root, ignore_errors=True)
    end_fold(accelerator)
    return scores


def _fit(
    cfg: Config, fold: int, accelerator: Accelerator, layout: CarvanaLayout, source: CachedSource | DecodedSource,
    folds: pd.DataFrame, state: TrainerState, resume: bool, stop_after_epoch: int | None,
) -> dict:
    """The training loop of `train_fold`: build, resume, then per epoch train, validate and keep,
    record; updates `state` in place as epochs finish."""
    parts = _build(cfg, fold, accelerator, source, folds)
    if resume:
        _load_saved_state(parts, state)
    _print_plan(parts)
    val_truth = np.stack([covered(source.get(int(i))[1]) for i in parts.val_idx])
    last_epoch = cfg.train.epochs if stop_after_epoch is None else min(cfg.train.epochs, stop_after_epoch)
    session = _Session(parts, state, last_epoch)

    session.progress("training")
    for epoch in range(state.epoch + 1, last_epoch + 1):
        raise_if_stopped(accelerator, cfg.exp.name, fold, state.epoch)  # here and after each step: a clean point
        row = _train_epoch(parts, state, session, epoch)
        report = ""
        if epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs:
            probs = _validate(parts)
            row["val_dice"] = val_dice = float(dice_per_image(probs >= HALF, val_truth).mean())
            report = _keep_if_chosen(parts, state, epoch, val_dice, probs)
        _record_epoch(parts, state, epoch, row, report)
        session.progress("training", row["images_per_s"])
        if _stops_early(cfg, state):
            accelerator.print(f"early stop: no improvement for {state.bad_epochs} epochs")  # same decision on every process
            break
    return _finish(parts, layout, state, session)


@dataclass
class _FoldParts:
    """What the loop of one fold works on: its data, the prepared model, optimizer and schedule."""

    cfg: Config
    fold: int
    accelerator: Accelerator
    paths: ExperimentPaths
    source: CachedSource | DecodedSource
    train_idx: np.ndarray  # rows of the folds table trained on
    val_idx: np.ndarray  # the held-out rows: validation and OOF
    train_set: SegmentationDataset
    train_loader: DataLoader
    val_loader: DataLoader
    model: torch.nn.Module  # as prepared by accelerate (DDP / compile wrapper)
    plain_model: torch.nn.Module  # the same weights, unwrapped
    optimizer: torch.optim.Optimizer
    scheduler: AcceleratedScheduler
    criterion: torch.nn.Module
    ema: AveragedModel | None
    n_params: int

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and kept: the EMA when train.ema > 0."""
        return self.ema.module if self.ema is not None else self.model


def _build(cfg: Config, fold: int, accelerator: Accelerator, source: CachedSource | DecodedSource, folds: pd.DataFrame) -> _FoldParts:
    """Loaders, model, AdamW, the LR schedule, the loss and the EMA, prepared by accelerate."""
    is_val = (folds["fold"] == fold).to_numpy()
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    loader_args = dict(batch_size=cfg.train.batch_size, num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available())
    train_set = SegmentationDataset(
        source, train_idx, train=cfg.data.augment, seed=cfg.train.seed, darken_floor=cfg.data.darken_floor, soft_masks=cfg.data.soft_masks
    )
    train_loader = DataLoader(train_set, shuffle=True, drop_last=len(train_idx) >= cfg.train.batch_size, **loader_args)
    val_loader = DataLoader(SegmentationDataset(source, val_idx, train=False), shuffle=False, **loader_args)
    model = build_model(cfg.model)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = count_parameters(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    # Sized from the un-prepared loader: accelerate steps a prepared scheduler once per process.
    steps_per_epoch = math.ceil(len(train_loader) / cfg.train.grad_accum)
    total_steps, warmup_steps = cfg.train.epochs * steps_per_epoch, max(1, int(cfg.train.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, cfg.train.schedule)
    )
    criterion = build_loss(cfg.train.loss)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, val_loader, scheduler)
    plain_model = accelerator.unwrap_model(model, keep_torch_compile=False)  # no DDP / compile wrapper, same weights
    ema = None
    if cfg.train.ema > 0:  # resume.py saves it as safetensors: never registered with accelerate, which would unpickle it
        ema = AveragedModel(plain_model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema), use_buffers=True)
    return _FoldParts(
        cfg, fold, accelerator, ExperimentPaths.of(cfg), source, train_idx, val_idx, train_set, train_loader, val_loader,
        model, plain_model, optimizer, scheduler, criterion, ema, n_params,
    )


def _load_saved_state(parts: _FoldParts, state: TrainerState) -> None:
    """Continue from the fold's saved state (weights, optimizer, schedule, RNG, EMA and `state`), if any."""
    cfg, state_root = parts.cfg, parts.paths.state_dir(parts.fold)
    loaded = load_resume_state(parts.accelerator, state_root, parts.ema)
    if loaded is not None:
        state.__dict__.update(loaded.__dict__)
    parts.accelerator.print(
        f"resuming {cfg.exp.name} fold {parts.fold} after epoch {state.epoch}" if state.epoch else f"no saved state in {state_root}: starting from epoch 1"
    )


def _print_plan(parts: _FoldParts) -> None:
    """The one line that says what this run will train, on what."""
    cfg, accelerator = parts.cfg, parts.accelerator
    accelerator.print(
        f"plan: {cfg.exp.name} fold {parts.fold}: {describe_model(cfg)}, {parts.n_params / 1e6:.2f}M parameters, at {cfg.data.size}, "
        f"{cfg.train.epochs} epochs of {len(parts.train_idx)} images (+{len(parts.val_idx)} validated), batch {cfg.train.batch_size}, "
        f"{accelerator.num_processes} process(es) on {accelerator.device}"
    )


class _Session:
    """The epochs this process trains, `first_epoch` + 1 to `last_epoch`: the ETA line after its
    first steps, and progress.json for `train_cv.py --parallel` (ETA from its mean epoch time)."""

    def __init__(self, parts: _FoldParts, state: TrainerState, last_epoch: int):
        self.parts, self.state, self.last_epoch = parts, state, last_epoch
        self.first_epoch, self.start = state.epoch, time.perf_counter()

    def print_eta(self, epoch: int, seen: int, elapsed: float) -> None:
        eta = (self.last_epoch - self.first_epoch) * len(self.parts.train_idx) * elapsed / seen - elapsed
        eta_text = f"{eta:.0f} s" if eta < 120 else f"{eta / 60:.1f} min"
        tqdm.write(f"ETA: {seen / elapsed:.1f} images/s, about {eta_text} more for epochs {epoch}-{self.last_epoch} (training steps; validation adds to it)")

    def progress(self, status: str, images_per_s: float | None = None) -> None:
        parts, state = self.parts, self.state
        if not parts.accelerator.is_main_process:
            return
        elapsed, done = time.perf_counter() - self.start, state.epoch - self.first_epoch
        write_progress(
            parts.paths.fold_dir(parts.fold), exp=parts.cfg.exp.name, fold=parts.fold, status=status, epoch=state.epoch,
            epochs=parts.cfg.train.epochs, stop_epoch=self.last_epoch, val_dice=_last_val_dice(state), images_per_s=images_per_s,
            elapsed_s=elapsed, eta_s=(self.last_epoch - state.epoch) * elapsed / done if done else None,
        )


def _last_val_dice(state: TrainerState) -> float | None:
    return next((row["val_dice"] for row in reversed(state.history) if "val_dice" in row), None)


def _train_epoch(parts: _FoldParts, state: TrainerState, session: _Session, epoch: int) -> dict:
    """One pass over the training images; returns the epoch's metrics row (loss, LR, images/s)."""
    cfg, accelerator, loader = parts.cfg, parts.accelerator, parts.train_loader
    parts.model.train()
    parts.train_set.set_epoch(epoch)
    loader.set_epoch(epoch)
    losses, seen, start = [], 0, time.perf_counter()
    last_dice = _last_val_dice(state)
    # disable=None: no bar when stderr is not a terminal (a log gets the one line per epoch of `_record_epoch`)
    bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.train.epochs}", disable=None if accelerator.is_local_main_process else True, leave=False)
    for step, batch in enumerate(bar):
        images = batch["image"]
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        mean_loss = _train_step(parts, images, batch["mask"], epoch, step)
        raise_if_stopped(accelerator, cfg.exp.name, parts.fold, state.epoch)
        losses.append(mean_loss.item())
        seen += len(images) * accelerator.num_processes
        shown_dice = "-" if last_dice is None else f"{last_dice:.4f}"
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", val_dice=shown_dice, img_s=f"{seen / (time.perf_counter() - start):.1f}")
        if epoch == session.first_epoch + 1 and step + 1 == min(ETA_AFTER_STEPS, len(loader)) and accelerator.is_main_process:
            session.print_eta(epoch, seen, time.perf_counter() - start)
    epoch_seconds = time.perf_counter() - start
    state.train_seconds += epoch_seconds
    state.train_images += seen
    return {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": parts.scheduler.get_last_lr()[0], "images_per_s": seen / epoch_seconds}


def _train_step(parts: _FoldParts, images: torch.Tensor, masks: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
    """Forward, backward, clip and step (the optimizer steps every train.grad_accum batches), then
    the EMA; returns the loss averaged over processes."""
    cfg, accelerator, model = parts.cfg, parts.accelerator, parts.model
    with accelerator.accumulate(model):
        loss = parts.criterion(model(images).float(), masks)
        mean_loss = accelerator.reduce(loss.detach(), "mean")
        if not torch.isfinite(mean_loss):
            raise NonFiniteLossError(
                f"non-finite loss ({mean_loss.item()}) at epoch {epoch}, step {step + 1} of "
                f"{cfg.exp.name} fold {parts.fold}: lower train.lr, raise train.grad_clip, or use train.precision=no"
            )
        accelerator.backward(loss)
        if accelerator.sync_gradients and cfg.train.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        parts.optimizer.step()
        parts.scheduler.step()
        parts.optimizer.zero_grad(set_to_none=True)
    if parts.ema is not None and accelerator.sync_gradients:
        parts.ema.update_parameters(parts.plain_model)
    return mean_loss


def _validate(parts: _FoldParts) -> np.ndarray:
    """Probabilities (uint8 levels) of the held-out images from `eval_model`, in `val_idx` order."""
    indices, probs = predict_loader(parts.eval_model, parts.val_loader, parts.accelerator, views=["identity"])
    val_position = {int(i): k for k, i in enumerate(parts.val_idx)}
    if sorted(indices.tolist()) != sorted(val_position):
        raise RuntimeError(f"validation gathered {len(indices)} predictions for {len(val_position)} images")
    return probs[np.argsort([val_position[int(i)] for i in indices])]


def _keep_if_chosen(parts: _FoldParts, state: TrainerState, epoch: int, val_dice: float, probs: np.ndarray) -> str:
    """Track the best epoch, and save this epoch's weights and OOF if it is the one train.keep
    names (the last, or the best so far); returns the report for the epoch's line."""
    cfg, accelerator = parts.cfg, parts.accelerator
    improved = val_dice > state.best_dice
    if improved:
        state.best_dice, state.best_epoch = val_dice, epoch
    state.bad_epochs = epoch - state.best_epoch
    keep = improved if cfg.train.keep == "best" else epoch == cfg.train.epochs
    if keep:
        state.kept_dice, state.kept_epoch = val_dice, epoch
        if accelerator.is_main_process:
            save_checkpoint(accelerator.unwrap_model(parts.eval_model, keep_torch_compile=False), cfg, parts.paths.fold_dir(parts.fold))
            sizes = np.array([parts.source.original_size(int(i)) for i in parts.val_idx])
            OOF(np.array(parts.source.ids)[parts.val_idx], probs, sizes).save(parts.paths.oof_npz(parts.fold))
    return f"  val Dice {val_dice:.4f}{'  *best*' if improved else ''}{'  (kept)' if keep else ''}"


def _record_epoch(parts: _FoldParts, state: TrainerState, epoch: int, row: dict, report: str) -> None:
    """The epoch is done: its row into the history and trackers, its line, the learning curve and
    the resumable state."""
    cfg, accelerator = parts.cfg, parts.accelerator
    state.epoch = epoch
    state.history.append(row)
    accelerator.log(row, step=epoch)
    accelerator.print(f"epoch {epoch}/{cfg.train.epochs}  loss {row['train_loss']:.4f}{report}  {row['images_per_s']:.1f} img/s")
    if accelerator.is_main_process:
        plot_learning_curve(parts.paths.metrics_csv(parts.fold), parts.paths.learning_curve(parts.fold), f"{cfg.exp.name} fold {parts.fold}")
    save_resume_state(accelerator, state, parts.paths.state_dir(parts.fold), parts.ema)


def _stops_early(cfg: Config, state: TrainerState) -> bool:
    """train.early_stop epochs have passed since the best validation Dice."""
    return bool(cfg.train.early_stop and state.bad_epochs >= cfg.train.early_stop)


def _finish(parts: _FoldParts, layout: CarvanaLayout, state: TrainerState, session: _Session) -> dict:
    """Score the fold if its last epoch (or an early stop) was reached: {} when it stopped before,
    and on the processes other than the main one."""
    cfg, accelerator = parts.cfg, parts.accelerator
    finished = state.epoch >= cfg.train.epochs or _stops_early(cfg, state)
    scores = {}
    if not finished:
        accelerator.print(f"stopped after epoch {state.epoch}; continue with --resume")
    elif accelerator.is_main_process:
        scores = score_fold(cfg, parts.fold, layout, state, parts.n_params, accelerator.num_processes)
        accelerator.print(
            f"{cfg.exp.name} fold {parts.fold}: Dice {scores['dice_train_res']:.4f} at {cfg.data.size}, "
            f"{scores['dice']:.4f} at original size (kept epoch {state.kept_epoch}, best validated {state.best_epoch})"
        )
    last_rate = state.history[-1]["images_per_s"] if state.history else None
    session.progress("finished" if finished else "stopped", last_rate)
    return scores


def score_fold(cfg: Config, fold: int, layout: CarvanaLayout, state: TrainerState, n_params: int, processes: int) -> dict:
    """Score the kept epoch's OOF at original resolution and write oof/<exp>/fold<k>.json: the
    experiment's one-model recipe applied by the chain tuning and prediction use (recipe/chain.py)."""
    paths = ExperimentPaths.of(cfg)
    oof = OOF.load(paths.oof_npz(fold))
    recipe = Recipe.single(cfg.exp.name, cfg.exp.runs_dir, cfg.data.folds, cfg.data.root)
    positive, negative = oof_histograms(recipe, [oof], layout, workers=max(1, cfg.data.num_workers))
    scores = {
        "exp": cfg.exp.name,
        "fold": fold,
        "images": len(oof.ids),
        "dice": float(dice_by_level(positive, negative)[:, HALF].mean()),
        "dice_train_res": state.kept_dice,
        "kept_epoch": state.kept_epoch,
        "best_epoch": state.best_epoch,
        "best_dice_train_res": state.best_dice,
        "epochs": state.epoch,
        "parameters": n_params,
        "train_images_per_s": state.train_images / max(state.train_seconds, 1e-9),
        "train_seconds": state.train_seconds,
        "processes": processes,
    }
    atomic_write_text(paths.oof_json(fold), json.dumps(scores, indent=2))
    return scores
