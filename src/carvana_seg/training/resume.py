"""Resumable training state: accelerate's own (model, optimizer, scheduler, RNG) plus ours.

    state/epoch<N>/              accelerate's `save_state` folder (safetensors weights; accelerate
                                 loads the rest with torch's weights-only loader)
    state/epoch<N>/ema.safetensors   the EMA copy of the weights, when train.ema > 0
    state/epoch<N>/trainer_state.json  epoch, best / kept scores, history
    state/latest.json            names the newest complete folder; written last

The EMA is saved here as safetensors, not registered with `register_for_checkpointing`:
accelerate loads registered objects from `custom_checkpoint_<i>.pkl` with the weights-only
check turned off, so a file planted in a state folder would run code on `--resume` (issue 15).
Nothing a resume reads can hold code.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator
from safetensors.torch import load_model, save_model
from torch import nn

from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_path, atomic_write_text

EMA_NAME = "ema.safetensors"


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
    """Load the newest saved state into the prepared objects (and the EMA); None when there is none."""
    latest = latest_state(state_root)
    if latest is None:
        return None
    target = state_root / latest["dir"]
    for unexpected in sorted(target.glob("custom_checkpoint_*")):
        raise PipelineError(
            f"{unexpected}: this project never writes custom checkpoints and will not load one (it could run code); "
            f"delete it, or delete {state_root} to train the fold from the start"
        )
    if ema is not None and not (target / EMA_NAME).is_file():
        raise PipelineError(f"{target / EMA_NAME} is missing (train.ema > 0): delete {state_root} to train the fold from the start")
    accelerator.load_state(str(target))
    if ema is not None:
        load_model(ema, str(target / EMA_NAME), device=str(accelerator.device))
    return TrainerState(**json.loads((target / "trainer_state.json").read_text()))
