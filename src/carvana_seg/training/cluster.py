"""Train folds as Ray tasks: `train_cv.py --ray [ADDRESS]` on a cluster, `--parallel N` on this machine.

Why Ray: one scheduler for one machine and for many. Every unfinished (experiment, fold) becomes
one task asking for `--cpus-per-fold` CPUs and `--gpus-per-fold` GPUs (fractions share a GPU);
Ray places it on a node with that much free. `--parallel N` is the same path on a local runtime
of N slots that starts and stops with the command.

Before any task the driver does, once, what no two processes may do at the same time: it checks
every input and every fold's lock (a fold being trained elsewhere is refused, naming its trainer),
claims each experiment name and builds the data caches. On a cluster it then checks that the
results, OOF and cache folders are shared storage: a marker file the driver writes in each must be
readable by a task on every node (and the data root's folds file the same bytes), else it refuses
in one line naming the folder, before anything trains.

A task runs the fold as a child process (`python -m carvana_seg.commands.train_fold ... --resume`)
in the driver's working folder, appending its output to runs/<exp>/fold<k>/train.log. The child
holds the fold's lock (training/lifecycle.py), so there is never a second writer; Ray's own retries
are off (`max_retries=0`): a fold lost with its node is reported failed, and rerunning resumes it
from its last saved epoch. A fold is finished when its oof/<exp>/fold<k>.json exists, so a rerun
skips finished folds. The driver prints one line per fold whenever its progress.json moves (epoch,
last validation Dice, images/s, ETA), a table at the end, and names each failed fold with its log.

Ctrl-C or SIGTERM cancels the tasks: each sends its child one SIGTERM (the child stops after its
current step, keeping its last saved epoch); a child whose task's worker dies gets SIGTERM too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pandas as pd

from carvana_seg.config import Config, load_config
from carvana_seg.data.layouts import with_data_channels
from carvana_seg.errors import PipelineError
from carvana_seg.locks import holder
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.training.fold_task import HEADER, read_markers, run_fold
from carvana_seg.training.lifecycle import as_interrupted
from carvana_seg.training.progress import format_seconds, read_progress
from carvana_seg.training.cv import fold_list
from carvana_seg.training.trainer import check_inputs, dataset_source

POLL_SECONDS = 2.0
CHILD_MODULE = "carvana_seg.commands.train_fold"
LOCAL = "local"  # --ray without an address: a runtime on this machine for the command's length
LOCAL_OBJECT_STORE = 100 * 1024**2  # bytes: tasks pass only small dicts, so the local store stays small
STORAGE_MARKER = "shared-storage-check-{token}.txt"  # written by the driver, read by a task on each node
STORAGE_TIMEOUT_S = 120.0  # a node's check task waits at most this for a CPU-free worker
FORWARDED_ENV = ("ACCELERATE_", "CARVANA_SEG_", "PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG")  # the driver's settings a fold must see


@dataclass(frozen=True)
class Resources:
    """What each fold asks of its node, and the local runtime's size (`slots`, `gpus`) when there is no address."""

    cpus_per_fold: float = 1.0
    gpus_per_fold: float = 0.0
    threads: int = 1  # torch threads in each fold's process
    slots: int = 1  # local runtime: CPUs, so at most this many folds at once
    gpus: tuple[str, ...] = ()  # local runtime: the GPUs it may use (CUDA_VISIBLE_DEVICES names)


@dataclass
class FoldJob:
    """One fold to train as a Ray task, and what became of it."""

    config_path: str
    overrides: list[str]
    cfg: Config
    fold: int
    status: str = "waiting"  # waiting | running | done | failed
    seconds: float = 0.0
    returncode: int | None = None
    where: str = ""  # the node (and GPU) that ran it
    refused: str = ""  # why it did not run: its fold is being trained elsewhere, or its task was lost
    log_size: int = 0  # train.log's size when the task was sent: it grows once the task starts
    shown: tuple = field(default_factory=tuple)  # the last status line's content, to print only changes

    @property
    def name(self) -> str:
        return f"{self.cfg.exp.name} fold {self.fold}"

    @property
    def fold_dir(self) -> Path:
        return ExperimentPaths.of(self.cfg).fold_dir(self.fold)

    @property
    def log(self) -> Path:
        return ExperimentPaths.of(self.cfg).train_log(self.fold)

    def spec(self, threads: int) -> dict:
        """What the task needs, as plain values (absolute paths: a node may start elsewhere)."""
        command = ["-m", CHILD_MODULE, "--config", str(Path(self.config_path).resolve()), "--fold", str(self.fold), "--resume", *self.overrides]
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        return {"command": command, "cwd": os.getcwd(), "log": str(self.log.resolve()), "lock": str(ExperimentPaths.of(self.cfg).fold_lock(self.fold).resolve()),
                "threads": threads, "env": env}


def check_experiments(specs: list[tuple[str, list[str]]], folds: list[int] | None) -> list[tuple]:
    """Every input of every experiment and every fold's lock, before anything is claimed, built
    or started: (config path, overrides, resolved config, layout, folds table) per experiment."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PipelineError("--ray / --parallel start one process per fold themselves: run them with python, not accelerate launch / torchrun")
    checked = []
    for path, overrides in specs:
        cfg = load_config(path, overrides)
        layout, table = check_inputs(cfg, fold_list(cfg, folds))
        checked.append((path, overrides, with_data_channels(cfg, layout), layout, table))  # the input channels, as train_fold claims them
    for _, _, cfg, _, _ in checked:
        refuse_folds_in_training(cfg, fold_list(cfg, folds))
    return checked


def unfinished(checked: list[tuple], folds: list[int] | None) -> list[Config]:
    """The experiments with a fold whose scores are not written yet."""
    return [cfg for _, _, cfg, _, _ in checked if any(not ExperimentPaths.of(cfg).oof_json(f).is_file() for f in fold_list(cfg, folds))]


def claim_and_cache(checked: list[tuple], folds: list[int] | None, out: TextIO) -> tuple[list[FoldJob], list[dict]]:
    """Claim each experiment name and build its data cache (once, before any task reads it);
    returns the folds to train and the scores of those finished earlier."""
    jobs, finished = [], []
    for path, overrides, cfg, layout, table in checked:
        paths = ExperimentPaths.of(cfg)
        paths.claim(cfg)
        dataset_source(cfg, layout, table)
        for fold in fold_list(cfg, folds):
            if paths.oof_json(fold).is_file():
                print(f"{cfg.exp.name} fold {fold}: finished earlier ({paths.oof_json(fold)}), skipped", file=out, flush=True)
                finished.append(json.loads(paths.oof_json(fold).read_text()))
            else:
                jobs.append(FoldJob(path, list(overrides), cfg, fold))
    return jobs, finished


def refuse_folds_in_training(cfg: Config, folds) -> None:
    """Refuse, naming the trainer, when a fold of `cfg` is being trained by another process
    now (its lock is held): found before any task starts, not after the others trained."""
    paths = ExperimentPaths.of(cfg)
    for fold in folds:
        who = holder(paths.fold_lock(fold))
        if who:
            raise PipelineError(f"{paths.fold_lock(fold)}: fold {fold} of {cfg.exp.name!r} is being trained by {who}: "
                                "wait for it to finish or stop it first; nothing was started")


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (none on a CPU machine)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [item.strip() for item in listed.split(",") if item.strip() and item.strip() != "-1"]
    import torch  # noqa: PLC0415

    return [str(i) for i in range(torch.cuda.device_count())]


def fold_threads(cpus: float) -> int:
    """torch threads per fold: OMP_NUM_THREADS when set, else the fold's CPUs (at least 1)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, int(cpus))


def local_resources(parallel: int, gpus: list[str], threads: int) -> Resources:
    """`--parallel N`: N one-CPU slots; with GPUs, each fold a share of one so that the N slots
    spread over them (several folds per GPU allowed)."""
    per_gpu = math.ceil(parallel / len(gpus)) if gpus else 0
    return Resources(cpus_per_fold=1.0, gpus_per_fold=1.0 / per_gpu if per_gpu else 0.0, threads=threads, slots=parallel, gpus=tuple(gpus))


@contextlib.contextmanager
def own_stop_signals() -> Iterator[None]:
    """Keep this command's SIGINT and SIGTERM handlers (lifecycle.stop_signals) over the block:
    ray.init installs its own, which would end the driver without stopping the folds."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def ray_runtime(address: str, resources: Resources) -> Iterator[None]:
    """Connected to the cluster at `address`, or (LOCAL) to a runtime of this machine that is
    stopped at the end of the block. The runtime listens on 127.0.0.1 only and sends no usage report."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address == LOCAL:  # read when ray is imported: every process of the runtime then uses the loopback address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray  # noqa: PLC0415 - seconds to import: only commands that schedule folds pay for it

    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    with own_stop_signals():
        if address == LOCAL:
            if resources.gpus:
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(resources.gpus)  # the local runtime hands out these only
            ray.init(address="local", num_cpus=resources.slots, num_gpus=len(resources.gpus), include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE, _node_ip_address="127.0.0.1", **quiet)
        else:
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, ValueError, RuntimeError) as err:
                raise PipelineError(f"--ray {address}: cannot connect to a Ray cluster there ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    try:
        yield
    finally:
        ray.shutdown()


def check_fits(resources: Resources) -> None:
    """Refuse a fold that no node could ever run (more CPUs or GPUs than the largest node has),
    instead of waiting for it forever."""
    import ray  # noqa: PLC0415

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if not any(n.get("CPU", 0) >= resources.cpus_per_fold and n.get("GPU", 0) >= resources.gpus_per_fold for n in nodes):
        largest = ", ".join(f"{n.get('CPU', 0):g} CPU / {n.get('GPU', 0):g} GPU" for n in nodes)
        raise PipelineError(f"--cpus-per-fold {resources.cpus_per_fold:g} --gpus-per-fold {resources.gpus_per_fold:g}: no Ray node has that much "
                            f"(the nodes: {largest or 'none alive'}); ask for less per fold; nothing was started")


def result_folders(cfgs: list[Config]) -> list[Path]:
    """The folders every node writes or reads: the results and OOF folders (exp.runs_dir, exp.oof_dir) and the data cache."""
    folders = []
    for cfg in cfgs:
        for folder in (Path(cfg.exp.runs_dir), Path(cfg.exp.oof_dir), *((Path(cfg.data.cache_dir),) if cfg.data.use_cache else ())):
            if folder.resolve() not in folders:
                folders.append(folder.resolve())
    return folders


def check_shared_storage(cfgs: list[Config]) -> None:
    """Refuse, naming the folder, unless every node sees the driver's results, OOF and cache
    folders (a marker written here is read there) and the same folds file of the data."""
    import ray  # noqa: PLC0415
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    token = uuid.uuid4().hex
    markers = {str(folder): str(folder / STORAGE_MARKER.format(token=token)) for folder in result_folders(cfgs)}
    digests = {str(Path(cfg.data.folds_path).resolve()): hashlib.sha256(Path(cfg.data.folds_path).read_bytes()).hexdigest() for cfg in cfgs}
    try:
        for marker in markers.values():
            Path(marker).parent.mkdir(parents=True, exist_ok=True)
            Path(marker).write_text(Path(marker).name)
        check = ray.remote(num_cpus=0, max_retries=0)(read_markers)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(markers, digests) for node in nodes]
        ready, late = ray.wait(refs, num_returns=len(refs), timeout=STORAGE_TIMEOUT_S)
        if late:
            raise PipelineError(f"shared storage: {len(late)} of {len(nodes)} Ray node(s) did not answer the storage check within {STORAGE_TIMEOUT_S:.0f} s; nothing was started")
        for node, missing in ray.get(ready):
            if missing:
                raise PipelineError(f"shared storage: {missing[0]} is not visible from Ray node {node} (a file written there by this command was not found "
                                    "from that node): results, OOF, the data cache and the data must be on storage every node mounts at the same path; nothing was started")
    finally:
        for marker in markers.values():
            Path(marker).unlink(missing_ok=True)


def status_line(job: FoldJob) -> tuple[tuple, str]:
    """(what changed, the line) for one fold."""
    where = f" on {job.where}" if job.where else ""
    if job.status == "failed":
        return (job.status,), f"{job.name}: FAILED ({job.refused})" if job.refused else f"{job.name}: FAILED (exit {job.returncode}), log {job.log}"
    progress = read_progress(job.fold_dir) if job.status in ("running", "done") else None
    if progress is None or progress.get("epochs") is None:
        return (job.status,), f"{job.name}: {job.status}{where}"
    dice = f"{progress['val_dice']:.4f}" if progress.get("val_dice") is not None else "-"
    rate = f"{progress['images_per_s']:.1f}" if progress.get("images_per_s") is not None else "-"
    eta = "done" if job.status == "done" else f"ETA {format_seconds(progress.get('eta_s'))}"
    return (job.status, progress["epoch"]), f"{job.name}: epoch {progress['epoch']}/{progress['epochs']}  val Dice {dice}  {rate} img/s  {eta}{where}"


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def started_where(job: FoldJob) -> str:
    """The node (and GPU) of a started task, from the header line it appended to train.log."""
    with contextlib.suppress(OSError), open(job.log, "rb") as log:
        log.seek(job.log_size)
        line = log.readline().decode(errors="replace")
        if line.startswith(HEADER) and " on " in line:
            return line.split(" on ", 1)[1].split(": ", 1)[0]
    return ""


def last_line(path: Path) -> str:
    """The last non-empty line of a fold's log: usually its one-line error."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def finish(job: FoldJob, ref, ray) -> None:
    """Record a task's outcome: done only if its process exited 0 and wrote the fold's scores."""
    try:
        result = ray.get(ref)
    except ray.exceptions.RayError as err:  # its worker or node was lost: Ray does not retry, a rerun resumes
        job.status, job.refused = "failed", f"its Ray task was lost ({type(err).__name__}); log {job.log}"
        return
    job.returncode, job.seconds, job.where, job.refused = result["returncode"], result["seconds"], result["where"], result["refused"]
    finished_ok = job.returncode == 0 and ExperimentPaths.of(job.cfg).oof_json(job.fold).is_file()
    job.status = "done" if finished_ok else "failed"


def follow(jobs: list[FoldJob], resources: Resources, poll_seconds: float, out: TextIO) -> None:
    """Send one task per fold and print each fold's line as it moves, until every task has ended."""
    import ray  # noqa: PLC0415

    task = ray.remote(run_fold).options(num_cpus=resources.cpus_per_fold, num_gpus=resources.gpus_per_fold, max_retries=0)
    pending = {}
    for job in jobs:
        job.log_size = log_size(job.log)
        pending[task.remote(job.spec(resources.threads))] = job
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_seconds)
            for ref in ready:
                finish(pending.pop(ref), ref, ray)
            for job in jobs:
                if job.status == "waiting" and log_size(job.log) > job.log_size:
                    job.status, job.where = "running", started_where(job)
                if job.status != "waiting":
                    key, line = status_line(job)
                    if key != job.shown:
                        job.shown = key
                        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=out, flush=True)
    except KeyboardInterrupt as err:
        stop = as_interrupted(err)
        running = [job for job in pending.values() if job.status == "running"]
        for ref in pending:  # queued tasks are dropped; running ones stop their fold after its current step
            ray.cancel(ref)
        ray.wait(list(pending), num_returns=len(pending), timeout=120)
        names = ", ".join(job.name for job in running) or "no fold was running"
        stop.where = f"{names}: each stopped after its current step, keeping its last saved epoch (its log says which)"
        raise stop from None


def train_on_ray(
    specs: list[tuple[str, list[str]]], folds: list[int] | None, address: str, resources: Resources,
    poll_seconds: float = POLL_SECONDS, out: TextIO = sys.stdout,
) -> pd.DataFrame:
    """Train every unfinished fold of each (config file, overrides) as a Ray task, on the cluster
    at `address` or (LOCAL) a local runtime of `resources.slots` slots; returns one row of scores
    per fold, or raises naming the folds that failed."""
    checked = check_experiments(specs, folds)
    todo = unfinished(checked, folds)
    with ray_runtime(address, resources) if todo else contextlib.nullcontext():
        if todo:
            check_fits(resources)
        if todo and address != LOCAL:
            check_shared_storage(todo)
        jobs, finished = claim_and_cache(checked, folds, out)
        if jobs:
            where = "a local Ray runtime" if address == LOCAL else f"the Ray cluster at {address}"
            print(f"training {len(jobs)} fold(s) on {where}, each with {resources.cpus_per_fold:g} CPU(s), {resources.gpus_per_fold:g} GPU(s) "
                  f"and {resources.threads} torch thread(s); logs: runs/<exp>/fold<k>/train.log", file=out, flush=True)
            follow(jobs, resources, poll_seconds, out)
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
    rows = [{"exp": row["exp"], "fold": row["fold"], "status": "earlier", "dice": row["dice"], "epochs": row["epochs"], "wall": "-", "node": "", "log": ""}
            for row in finished]
    for job in jobs:
        scores = ExperimentPaths.of(job.cfg).oof_json(job.fold)
        done = json.loads(scores.read_text()) if job.status == "done" and scores.is_file() else {}
        rows.append({"exp": job.cfg.exp.name, "fold": job.fold, "status": job.status, "dice": done.get("dice", float("nan")),
                     "epochs": done.get("epochs", "-"), "wall": format_seconds(job.seconds), "node": job.where, "log": str(job.log)})
    if rows:
        print(pd.DataFrame(rows).sort_values(["exp", "fold"]).to_string(index=False, float_format="%.4f"), file=out, flush=True)
