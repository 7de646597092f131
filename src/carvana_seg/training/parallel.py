"""Train several folds at once, each in its own process: `train_cv.py --parallel N`.

Why: a small network at a small batch (the CPU recipe's, at batch 8) leaves a large GPU
mostly idle, while several folds side by side can fill it. So each fold is a child process
(`python -m carvana_seg.commands.train_fold ... --resume`) with its own `CUDA_VISIBLE_DEVICES`
(GPUs are dealt round-robin to the N slots, several folds per GPU allowed) and
`cores // N` torch threads, logging to runs/<exp>/fold<k>/train.log.

Before any child starts, the parent checks every input and every fold's lock (a fold being
trained elsewhere is refused, naming its trainer, before anything is written), claims each
experiment name and builds the data caches, so no two processes ever write a cache or a config.
A waiting fold that another process starts training meanwhile fails, naming that process,
without its log being written into the fold's folder. It then prints
one line per fold whenever its progress.json moves (epoch, last validation Dice, images/s,
ETA) and a final table; a failed fold is named with its log and the command fails. A fold
is finished when its oof/<exp>/fold<k>.json exists, so a rerun skips finished folds and
resumes interrupted ones, as the sequential loop (cv.py) does.

Each child runs in its own session, so a Ctrl-C reaches only the parent, which sends every
running child one SIGTERM (each stops after its current step, keeping its last saved epoch),
waits for them and says how to continue; a child whose parent dies gets SIGTERM too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pandas as pd
import torch

from carvana_seg.config import Config, load_config
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.errors import PipelineError
from carvana_seg.locks import holder
from carvana_seg.training.lifecycle import STOP_WITH_PARENT, Interrupted
from carvana_seg.training.progress import format_seconds, read_progress
from carvana_seg.training.trainer import check_inputs, dataset_source

LOG_NAME = "train.log"
POLL_SECONDS = 2.0
CHILD_MODULE = "carvana_seg.commands.train_fold"


@dataclass
class FoldJob:
    """One fold to train in a child process, and what became of it."""

    config_path: str
    overrides: list[str]
    cfg: Config
    fold: int
    status: str = "waiting"  # waiting | running | done | failed
    process: subprocess.Popen | None = None
    slot: int | None = None
    device: str | None = None
    started: float = 0.0
    seconds: float = 0.0
    returncode: int | None = None
    refused: str = ""  # why it was not started: its fold is being trained elsewhere
    shown: tuple = field(default_factory=tuple)  # the last status line's content, to print only changes

    @property
    def name(self) -> str:
        return f"{self.cfg.exp.name} fold {self.fold}"

    @property
    def fold_dir(self) -> Path:
        return ExperimentPaths.of(self.cfg).fold_dir(self.fold)

    @property
    def lock(self) -> Path:
        return ExperimentPaths.of(self.cfg).fold_lock(self.fold)

    @property
    def log(self) -> Path:
        return self.fold_dir / LOG_NAME

    def command(self) -> list[str]:
        return [sys.executable, "-m", CHILD_MODULE, "--config", self.config_path, "--fold", str(self.fold), "--resume", *self.overrides]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (none on a CPU machine)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [item.strip() for item in listed.split(",") if item.strip() and item.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]


def child_threads(parallel: int) -> int:
    """torch threads per child: OMP_NUM_THREADS when set, else this machine's cores shared out."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, len(os.sched_getaffinity(0)) // parallel)


def prepare(specs: list[tuple[str, list[str]]], folds: list[int] | None) -> tuple[list[FoldJob], list[dict]]:
    """Check, claim and cache every experiment; returns the folds to train and the scores of
    those finished earlier."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PipelineError("--parallel starts one process per fold itself: run it with python, not accelerate launch / torchrun")
    cfgs = [(path, overrides, load_config(path, overrides)) for path, overrides in specs]
    checked = [(path, overrides, cfg, *check_inputs(cfg, folds if folds is not None else range(cfg.data.folds))) for path, overrides, cfg in cfgs]
    for _, _, cfg, _, _ in checked:  # before anything is claimed or built
        refuse_folds_in_training(cfg, folds if folds is not None else range(cfg.data.folds))
    jobs, finished = [], []
    for path, overrides, cfg, layout, table in checked:
        paths = ExperimentPaths.of(cfg)
        paths.claim(cfg)
        dataset_source(cfg, layout, table)  # the cache, built once here before any child reads it
        for fold in folds if folds is not None else range(cfg.data.folds):
            if paths.oof_json(fold).is_file():
                print(f"{cfg.exp.name} fold {fold}: finished earlier ({paths.oof_json(fold)}), skipped", flush=True)
                finished.append(json.loads(paths.oof_json(fold).read_text()))
            else:
                jobs.append(FoldJob(path, list(overrides), cfg, fold))
    return jobs, finished


def refuse_folds_in_training(cfg: Config, folds) -> None:
    """Refuse, naming the trainer, when a fold of `cfg` is being trained by another process
    now (its lock is held): found before any child starts, not after the others trained."""
    paths = ExperimentPaths.of(cfg)
    for fold in folds:
        who = holder(paths.fold_lock(fold))
        if who:
            raise PipelineError(f"{paths.fold_lock(fold)}: fold {fold} of {cfg.exp.name!r} is being trained by {who}: "
                                "wait for it to finish or stop it first; nothing was started")


def start(job: FoldJob, slot: int, gpus: list[str], threads: int) -> bool:
    """Start the fold's child; False (the job failed) when another process has started
    training the fold since `prepare` checked it: its folder is then not this run's to write in."""
    who = holder(job.lock)
    if who:
        job.status, job.refused = "failed", f"being trained by {who}"
        return False
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TQDM_DISABLE": "1", STOP_WITH_PARENT: str(os.getpid())}
    if gpus:
        job.device = gpus[slot % len(gpus)]
        env["CUDA_VISIBLE_DEVICES"] = job.device
    job.fold_dir.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:  # appended: a resumed fold keeps its earlier sessions' output
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(job.command())}\n")
        log.flush()
        # its own session: a Ctrl-C reaches only this parent, which stops each child once (SIGTERM)
        job.process = subprocess.Popen(
            job.command(), stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
    job.slot, job.status, job.started = slot, "running", time.perf_counter()
    return True


def status_line(job: FoldJob) -> tuple[tuple, str]:
    """(what changed, the line) for one fold."""
    where = f"GPU {job.device}" if job.device is not None else "CPU"
    progress = read_progress(job.fold_dir) if job.status in ("running", "done") else None
    if job.status == "failed":
        return (job.status,), f"{job.name}: FAILED ({job.refused})" if job.refused else f"{job.name}: FAILED (exit {job.returncode}), log {job.log}"
    if progress is None or progress.get("epochs") is None:
        return (job.status,), f"{job.name}: {job.status} on {where}"
    dice = f"{progress['val_dice']:.4f}" if progress.get("val_dice") is not None else "-"
    rate = f"{progress['images_per_s']:.1f}" if progress.get("images_per_s") is not None else "-"
    eta = "done" if job.status == "done" else f"ETA {format_seconds(progress.get('eta_s'))}"
    key = (job.status, progress["epoch"])
    return key, f"{job.name}: epoch {progress['epoch']}/{progress['epochs']}  val Dice {dice}  {rate} img/s  {eta}  ({where})"


def last_line(path: Path) -> str:
    """The last non-empty line of a child's log: usually its one-line error."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def train_parallel(
    specs: list[tuple[str, list[str]]], folds: list[int] | None, parallel: int, gpus: list[str] | None = None,
    poll_seconds: float = POLL_SECONDS, out: TextIO = sys.stdout,
) -> pd.DataFrame:
    """Train every unfinished fold of each (config file, overrides) with `parallel` folds at a
    time; returns one row of scores per fold, or raises naming the folds that failed."""
    if parallel < 1:
        raise PipelineError(f"--parallel: must be >= 1, got {parallel}")
    gpus = visible_gpus() if gpus is None else gpus
    threads = child_threads(parallel)
    jobs, finished = prepare(specs, folds)
    print(f"training {len(jobs)} fold(s), {parallel} at a time on {', '.join(f'GPU {g}' for g in gpus) or 'CPU'} "
          f"({threads} torch thread(s) each); logs: runs/<exp>/fold<k>/{LOG_NAME}", file=out, flush=True)
    waiting, running = list(jobs), []
    try:
        while waiting or running:
            free = sorted(set(range(parallel)) - {job.slot for job in running})
            while waiting and free:
                job = waiting.pop(0)
                if start(job, free[0], gpus, threads):
                    running.append(job)
                    free.pop(0)
            for job in list(running):
                code = job.process.poll()
                if code is None:
                    continue
                job.returncode, job.seconds = code, time.perf_counter() - job.started
                finished_ok = code == 0 and ExperimentPaths.of(job.cfg).oof_json(job.fold).is_file()
                job.status = "done" if finished_ok else "failed"
                running.remove(job)
            for job in jobs:
                if job.status == "waiting":
                    continue
                key, line = status_line(job)
                if key != job.shown:
                    job.shown = key
                    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=out, flush=True)
            if running:
                time.sleep(poll_seconds)
    except Interrupted as stop:
        names = ", ".join(job.name for job in running) or "no fold was running"
        stop.where = f"{names}: each stopped after its current step, keeping its last saved epoch (its log says which)"
        raise
    finally:
        for job in running:  # interrupted (Ctrl-C, SIGTERM): stop the children; each keeps its last saved epoch
            job.process.terminate()
        for job in running:
            job.process.wait()

    rows = finished + [json.loads(ExperimentPaths.of(j.cfg).oof_json(j.fold).read_text()) for j in jobs if j.status == "done"]
    print_table(jobs, finished, out)
    failed = [job for job in jobs if job.status == "failed"]
    if failed:
        raise PipelineError(
            f"{len(failed)} of {len(jobs)} fold(s) failed: "
            + "; ".join(f"{job.name} ({job.refused or f'exit {job.returncode}, log {job.log}: {last_line(job.log)}'})" for job in failed)
        )
    return pd.DataFrame(rows)


def print_table(jobs: list[FoldJob], finished: list[dict], out: TextIO) -> None:
    """The final table: one row per fold, trained now, failed, or finished earlier."""
    rows = [{"exp": row["exp"], "fold": row["fold"], "status": "earlier", "dice": row["dice"], "epochs": row["epochs"], "wall": "-", "log": ""}
            for row in finished]
    for job in jobs:
        scores = ExperimentPaths.of(job.cfg).oof_json(job.fold)
        done = json.loads(scores.read_text()) if job.status == "done" and scores.is_file() else {}
        rows.append({"exp": job.cfg.exp.name, "fold": job.fold, "status": job.status, "dice": done.get("dice", float("nan")),
                     "epochs": done.get("epochs", "-"), "wall": format_seconds(job.seconds), "log": "" if job.refused else str(job.log)})
    if rows:
        print(pd.DataFrame(rows).sort_values(["exp", "fold"]).to_string(index=False, float_format="%.4f"), file=out, flush=True)
