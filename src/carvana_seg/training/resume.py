"""Resumable training state: accelerate's own (model, optimizer, scheduler, RNG) plus ours.

    state/epoch<N>/              accelerate's `save_state` folder (safetensors weights; accelerate
                                 loads the rest with torch's weights-only loader)
    state/epoch<N>/ema.safetensors   the EMA copy of the weights, when train.ema > 0
    state/epoch<N>/trainer_state.json  epoch, best / kept scores, history
    state/latest.json            names the newest complete folder; written last

The EMA is saved here as safetensors, not registered with `register_for_checkpointing`:
accelerate loads registered objects from `custom_checkpoint_<i>.pkl` with the weights-only
check turned off, so a file planted in a state folder would run code on `--resume`.
Nothing a resume reads can hold code, and `check_saved_state` reads every file before
accelerate does, so a bad one is named in one line instead of dropped or dumped as a traceback.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import load as accelerate_load
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_path, atomic_write_text

EMA_NAME = "ema.safetensors"
STATE_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin", "trainer_state.json")  # besides random_states_<rank>.pkl


@dataclass
class TrainerState:
    """What a resumed run needs beyond accelerate's own state (model, optimizer, scheduler, RNG)."""

    epoch: int = 0  # epochs completed
    best_dice: float = -1.0
    best_epoch: int = 0
    kept_dice: float = -1.0  # validation Dice of the epoch whose weights and OOF are kept
    kept_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best, for early stopping
    train_seconds: float = 0.0
    train_images: int = 0
    history: list[dict] = field(default_factory=list)


def save_resume_state(accelerator: Accelerator, state: TrainerState, state_root: Path, ema: nn.Module | None = None) -> None:
    """Save accelerate's state, the EMA weights and ours to state/epoch<N>; `latest.json` names the
    newest complete one, written last, so a crash mid-save never leaves a stale or partial pick."""
    target = state_root / f"epoch{state.epoch:04d}"
    accelerator.save_state(str(target))
    if accelerator.is_main_process:
        if ema is not None:
            with atomic_path(target / EMA_NAME) as tmp:
                save_model(ema, str(tmp), force_contiguous=True)  # channels_last weights are not contiguous
        atomic_write_text(target / "trainer_state.json", json.dumps(state.__dict__))
        atomic_write_text(state_root / "latest.json", json.dumps({"epoch": state.epoch, "dir": target.name}))
        for old in state_root.glob("epoch*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def latest_state(state_root: Path) -> dict | None:
    """`{"epoch", "dir"}` of the newest complete saved state, or None."""
    latest = state_root / "latest.json"
    return json.loads(latest.read_text()) if latest.is_file() else None


def load_resume_state(accelerator: Accelerator, state_root: Path, ema: nn.Module | None = None) -> TrainerState | None:
    """Load the newest saved state into the prepared objects (and the EMA); None when there is none.

    Its files were checked by `check_saved_state` before the run wrote anything (trainer.py's
    fold guard): accelerate would drop a bad RNG file silently.
    """
    latest = latest_state(state_root)
    if latest is None:
        return None
    target = state_root / latest["dir"]
    accelerator.load_state(str(target))
    if ema is not None:
        load_model(ema, str(target / EMA_NAME), device=str(accelerator.device))
    return TrainerState(**json.loads((target / "trainer_state.json").read_text()))


def check_saved_state(state_root: Path, processes: int, ema: bool) -> dict | None:
    """`latest.json` of the newest saved state once every file a resume reads is found readable,
    or None when there is none; a bad file is refused in one line naming it.

    accelerate loads these files itself, weights-only; a `random_states_<i>.pkl` that fails is
    dropped silently there (the run resumes with other random numbers) and a bad optimizer or
    scheduler file is a long traceback. So each file is loaded here first, the same way.
    """
    latest_path = state_root / "latest.json"
    if not latest_path.is_file():
        return None
    fix = f"delete {state_root} to train the fold from the start (train_fold.py --restart does that)"
    latest = _read_json(latest_path, fix)
    epoch = latest.get("epoch") if isinstance(latest, dict) else None
    if type(epoch) is not int or epoch < 1 or latest.get("dir") != f"epoch{epoch:04d}":
        raise PipelineError(f"{latest_path}: expected {{\"epoch\": N, \"dir\": \"epochNNNN\"}} as this project writes it; {fix}")
    target = state_root / latest["dir"]
    for unexpected in sorted(target.glob("custom_checkpoint_*")):
        raise PipelineError(
            f"{unexpected}: this project never writes custom checkpoints and will not load one (it could run code); "
            f"delete it, or {fix}"
        )
    for name in [*STATE_FILES, *([EMA_NAME] if ema else [])]:
        if not (target / name).is_file():
            raise PipelineError(f"{target / name} is missing; {fix}")
    missing = [target / f"random_states_{rank}.pkl" for rank in range(processes) if not (target / f"random_states_{rank}.pkl").is_file()]
    if missing:  # accelerate would resume that process with other random numbers, silently
        saved_by = len(list(target.glob("random_states_*.pkl")))
        fewer = f": the state was saved by {saved_by} process(es), this run has {processes}; resume it with {saved_by}, or" if saved_by else ";"
        raise PipelineError(f"{missing[0]} is missing{fewer} {fix}")
    for path in sorted(target.iterdir()):
        _check_state_file(path, fix)
    return latest


def _check_state_file(path: Path, fix: str) -> None:
    """Load one file of a state folder the way its reader will; unknown files are never read."""
    try:
        if path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix in (".bin", ".pt", ".pkl"):
            with warnings.catch_warnings():  # torch warns about the pickle protocol of a foreign file
                warnings.simplefilter("ignore")
                loaded = accelerate_load(path, map_location="cpu")
            if path.name.startswith("random_states_"):
                _check_random_states(loaded)
        elif path.name == "trainer_state.json":
            TrainerState(**_read_json(path, fix))
    except PipelineError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a reader is this file's fault, named below
        raise PipelineError(f"{path}: cannot be read as saved training state ({_reason(err)}); {fix}") from None


def _check_random_states(states: dict) -> None:
    """Set each saved generator state on a fresh generator: what accelerate would apply, or drop."""
    random.Random().setstate(states["random_state"])
    np.random.RandomState().set_state(states["numpy_random_seed"])
    torch.Generator().set_state(states["torch_manual_seed"])


def _read_json(path: Path, fix: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: not readable JSON ({_reason(err)}); {fix}") from None


def _reason(err: Exception) -> str:
    """The first informative line of a reader's error (torch's weights-only errors span a paragraph)."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first.split('. ')[0][:200]}" if first else type(err).__name__
