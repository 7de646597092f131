"""Starting and stopping a fold: one writer per fold, no rerun over saved state unless asked, and
a clean stop on Ctrl-C (SIGINT) or SIGTERM.

`fold_writer` is entered once the experiment name is claimed and before anything of the fold
is written. The main process holds `runs/<exp>/fold<k>/.lock` (locks.exclusive_lock: a second
writer is refused naming the holder; a lock left by a dead process is taken over) and settles
the fold's saved state: checked for `--resume`, removed for `--restart`, refused otherwise.
Under DDP the other processes take the main process's outcome (a broadcast), so a refusal stops
every process and none waits at a barrier for a main process that has gone.

A command that trains wraps itself in `stop_signals`: inside `fold_writer` a signal only sets a
flag, which the training loop reads between steps (`raise_if_stopped`; all processes agree
through one gather), so it stops where the last saved epoch is intact and says which; elsewhere
(checking inputs, building the cache) it stops at once, before the fold is touched. A second
Ctrl-C stops at once anywhere. A run started by a launcher (`accelerate launch`, `torchrun`,
`train_cv.py --parallel`) gets SIGTERM when the launcher dies, so it does not train on alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from carvana_seg.config import Config
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.errors import PipelineError
from carvana_seg.locks import exclusive_lock
from carvana_seg.training.fold_task import STOP_WITH_PARENT  # set for a fold's process by its Ray task
from carvana_seg.training.resume import check_saved_state

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LAUNCHER_ENV = ("TORCHELASTIC_RUN_ID", "ACCELERATE_MIXED_PRECISION", STOP_WITH_PARENT)  # what accelerate / torchrun set
PR_SET_PDEATHSIG = 1

_received: list[int] = []  # stop signals received while `stop_signals` is active
_deferred = 0  # > 0 inside `fold_writer`: the loop stops at its next clean point


class Interrupted(KeyboardInterrupt):
    """A stop signal ended the run. `where` says what was kept ("" when it stopped at once).
    A KeyboardInterrupt, so no `except Exception` swallows it."""

    def __init__(self, signum: int, where: str = ""):
        super().__init__(where)
        self.signum, self.where = signum, where

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by the signal

    def line(self, resume: str) -> str:
        return f"stopped by {signal.Signals(self.signum).name}: {self.where or 'stopped at once (what was saved before is intact)'}; continue with: {resume}"


def distributed() -> bool:
    """Started by a DDP launcher with several processes (they set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def exit_stopped(stop: Interrupted, resume: str) -> NoReturn:
    """End a command that a stop signal interrupted: its one line (under DDP from the main
    process only) and the signal's exit code."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(stop.line(resume), file=sys.stderr)
    sys.exit(stop.exit_code)


def as_interrupted(err: KeyboardInterrupt) -> Interrupted:
    """`err` as the `Interrupted` of the stop signal received: a library that checks for signals
    itself (Ray's ray.wait) raises a plain KeyboardInterrupt in place of the handler's."""
    if isinstance(err, Interrupted):
        return err
    return Interrupted(_received[0] if _received else signal.SIGINT)


def _on_signal(signum: int, frame) -> None:
    repeated_ctrl_c = signum == signal.SIGINT and signal.SIGINT in _received
    _received.append(signum)
    if not _deferred or repeated_ctrl_c:
        raise Interrupted(signum)


def _stop_with_parent() -> None:
    """Under a launcher, ask Linux for SIGTERM when the launcher dies (a killed `accelerate
    launch` would leave its child training otherwise)."""
    if not sys.platform.startswith("linux") or not any(os.environ.get(name) for name in LAUNCHER_ENV):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    parent = os.environ.get(STOP_WITH_PARENT, "")
    if parent.isdigit() and os.getppid() != int(parent):  # it died before the request
        os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupted` for the block (a command's whole run)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _on_signal) for signum in STOP_SIGNALS}
    try:
        _stop_with_parent()
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received.clear()


def raise_if_stopped(accelerator: Accelerator, exp: str, fold: int, saved_epoch: int) -> None:
    """At a clean point of the loop (`saved_epoch` is the last one saved): raise `Interrupted` if
    any process got a stop signal. Every process calls it at the same points: under DDP it is a
    collective, so they all stop at the same step."""
    signum = _received[0] if _received else 0
    if accelerator.num_processes > 1:
        signum = int(accelerator.gather(torch.tensor([signum], device=accelerator.device)).max())
    if not signum:
        return
    if saved_epoch:
        raise Interrupted(signum, f"fold {fold} of {exp!r} keeps its saved state after epoch {saved_epoch} (the epoch in progress is dropped)")
    raise Interrupted(signum, f"fold {fold} of {exp!r} had no epoch saved yet")


@contextlib.contextmanager
def fold_writer(accelerator: Accelerator, cfg: Config, fold: int, resume: bool, restart: bool) -> Iterator[dict | None]:
    """Be the one writer of the fold for the block; yields the checked `latest.json` of the state
    to resume from (None: start at epoch 1). Refused on every process alike."""
    global _deferred
    paths = ExperimentPaths.of(cfg)
    with contextlib.ExitStack() as held:
        failure, saved = None, None
        if accelerator.is_main_process:
            try:
                held.enter_context(exclusive_lock(paths.fold_lock(fold), f"fold{fold} of experiment {cfg.exp.name!r}"))
                saved = _settle_state(paths.state_dir(fold), resume, restart, accelerator.num_processes, cfg.train.ema > 0)
            except Exception as err:  # noqa: BLE001 - told to the other processes, then raised here
                failure = err
        note = None
        if isinstance(failure, PipelineError):
            note = str(failure)
        elif failure is not None:
            note = f"the main process failed: {failure!r}"
        note, saved = broadcast_object_list([note, saved])
        if failure is not None:
            raise failure
        if note is not None:
            raise PipelineError(note)
        _deferred += 1
        try:
            yield saved
        finally:
            _deferred -= 1


def _settle_state(state_root: Path, resume: bool, restart: bool, processes: int, ema: bool) -> dict | None:
    """The state to resume from, after checking it (--resume) or removing it (--restart); a
    rerun that names neither is refused when the fold has saved state: it would overwrite it.
    A state folder that is a symbolic link is refused alike: training writes and removes it."""
    if state_root.is_symlink():
        raise PipelineError(
            f"{state_root} is a symbolic link: a fold's state must be a real folder (--resume reads it, --restart removes it, "
            "training writes and removes it), never reached through a link; replace the link by hand"
        )
    if restart:
        remove_state(state_root)
        return None
    if resume:
        return check_saved_state(state_root, processes, ema)
    latest = state_root / "latest.json"
    if latest.is_file():
        raise PipelineError(
            f"{state_root} holds this fold's saved state{_saved_epoch(latest)}: continue it with --resume, "
            "or start over with --restart (deletes that state)"
        )
    return None


def _saved_epoch(latest: Path) -> str:
    try:
        return f" after epoch {int(json.loads(latest.read_text())['epoch'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def remove_state(state_root: Path) -> None:
    """Delete a fold's `state/` folder (asked for with --restart; `_settle_state` has refused a link)."""
    if state_root.exists() and not state_root.is_dir():
        raise PipelineError(f"{state_root} is not a folder: --restart removes only a state folder; remove it by hand")
    if state_root.is_dir():
        shutil.rmtree(state_root)
