"""Starting and stopping a fold: one writer per fold, no silent rerun over saved state
(--resume / --restart), every saved-state file checked before a resume, and a clean stop on
SIGINT / SIGTERM that names the command that continues it."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_layout

from carvana_seg.config import load_config
from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.errors import PipelineError
from carvana_seg.locks import exclusive_lock
from carvana_seg.commands import train_fold as run_fold
from carvana_seg.training.cluster import FoldJob, check_experiments, status_line
from carvana_seg.training.fold_task import run_fold as fold_task
from carvana_seg.training.trainer import train_fold

REPO = Path(__file__).resolve().parents[1]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
WAIT_S = 60


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = write_tiny_layout(tmp_path_factory.mktemp("lifecycle") / "data", cars=4, angles=4, hw=(48, 72))
    write_folds(make_folds(CarvanaLayout(root), 2, seed=0), root / "folds.csv")
    return root


def overrides(work: Path, data_root: Path, *extra: str) -> list[str]:
    return [f"data.root={data_root}", f"data.cache_dir={work / 'cache'}", f"exp.runs_dir={work / 'runs'}",
            f"exp.oof_dir={work / 'oof'}", "data.size=32x48", *extra]


def tiny(work: Path, data_root: Path, *extra: str):
    return load_config(REPO / "configs" / "tiny.yaml", overrides(work, data_root, *extra))


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under `folders` with its bytes: what a refused command must leave as it was."""
    return {str(p): p.read_bytes() for folder in folders if folder.exists() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, data_root) -> Path:
    """A work folder whose fold 0 of 'sliced' stopped after epoch 1 of 2, with its saved state
    (its config names runs/, oof/ and cache/ relative to the folder, so a copy is the same run)."""
    work = tmp_path_factory.mktemp("stopped")
    with contextlib.chdir(work):
        assert train_fold(tiny(Path(), data_root, "exp.name=sliced"), fold=0, stop_after_epoch=1) == {}
    return work


@pytest.fixture()
def work(tmp_path, stopped, monkeypatch) -> Path:
    """A fresh copy of `stopped`, made the working folder; returns the relative base, `.`."""
    shutil.copytree(stopped, tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")
    return Path()


# ---- a rerun over saved state: --resume or --restart, never silently -----------------------

def test_rerun_over_saved_state_is_refused_and_restart_starts_over(work, data_root):
    cfg = tiny(work, data_root, "exp.name=sliced")
    fold_dir = work / "runs" / "sliced" / "fold0"
    before = snapshot(work / "runs", work / "oof")
    with pytest.raises(PipelineError, match=r"fold0/state holds this fold's saved state after epoch 1: continue it with --resume, "
                                            r"or start over with --restart \(deletes that state\)"):
        train_fold(cfg, fold=0)
    with pytest.raises(PipelineError, match=r"--resume and --restart exclude each other"):
        train_fold(cfg, fold=0, resume=True, restart=True)
    assert snapshot(work / "runs", work / "oof") == before and not (fold_dir / ".lock").exists()

    scores = train_fold(cfg, fold=0, restart=True)
    assert scores["epochs"] == 2
    sessions = json.loads((fold_dir / "run.json").read_text())
    assert sessions["first_epoch"] == 1 and sessions["status"] == "finished"  # from epoch 1, not resumed at 2
    assert (fold_dir / "metrics.csv").read_text().count("\n") == 3  # header + epochs 1 and 2
    assert not (fold_dir / "state").exists()


def test_restart_never_removes_through_a_link(work, data_root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state = work / "runs" / "sliced" / "fold0" / "state"
    shutil.move(state, elsewhere / "state")
    state.symlink_to(elsewhere / "state")
    kept, before = snapshot(elsewhere), snapshot(work / "runs", work / "oof")
    for flags in ({"restart": True}, {"resume": True}, {}):  # --resume would read, and training write, through the link
        with pytest.raises(PipelineError, match=r"fold0/state is a symbolic link: a fold's state must be a real folder"):
            train_fold(tiny(work, data_root, "exp.name=sliced"), fold=0, **flags)
    assert snapshot(elsewhere) == kept and kept and snapshot(work / "runs", work / "oof") == before


def test_train_fold_cli_refuses_a_rerun_in_one_line(work, data_root):
    before = snapshot(work / "runs")
    done = subprocess.run([sys.executable, REPO / "scripts" / "train_fold.py", "--config", REPO / "configs" / "tiny.yaml", "--fold", "0",
                           *overrides(work, data_root, "exp.name=sliced")], env=ONE_THREAD, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: ") and "--resume" in done.stderr and "--restart" in done.stderr
    assert snapshot(work / "runs") == before


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_stop_after_epoch_must_be_a_positive_integer(tmp_path, monkeypatch, capsys, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_fold.main(["--fold", "0", "--stop-after-epoch", value, "exp.name=sliced"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err == f"config error: argument --stop-after-epoch: {value!r} is not a positive integer (1 or more) (see --help)\n"
    assert list(tmp_path.iterdir()) == []  # the name is not claimed


def _mapped(pid: int, library: str) -> bool:
    with contextlib.suppress(OSError):
        return library in Path(f"/proc/{pid}/maps").read_text()
    return False


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs /proc to see the import under way")
def test_ctrl_c_while_the_command_loads_is_one_line(tmp_path):
    """Ctrl-C while torch is being imported (seconds, before any of the command runs)."""
    process = subprocess.Popen([sys.executable, REPO / "scripts" / "train_fold.py", "--fold", "0", "exp.name=early"],
                               cwd=tmp_path, env=ONE_THREAD, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT_S
    while not _mapped(process.pid, "libtorch") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=WAIT_S)[1]
    assert (process.returncode, err) == (130, "stopped by SIGINT before training started: nothing was written\n")
    assert list(tmp_path.iterdir()) == []


# ---- every file of a saved state is checked before accelerate reads it ---------------------

class _Payload:
    """Unpickling this creates `marker`: the code a planted state file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"random_state": _Payload(marker)}))


def _truncate(path: Path, marker: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_rng(path: Path, marker: Path) -> None:
    torch.save({"step": 0}, path)  # loads weights-only, but holds no generator state


def _garbage(path: Path, marker: Path) -> None:
    path.write_text("{not json")


def _remove(path: Path, marker: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("name, damage, message", [
    ("random_states_0.pkl", _plant, r"random_states_0.pkl: cannot be read as saved training state \(UnpicklingError: .+\)"),
    ("random_states_0.pkl", _not_rng, r"random_states_0.pkl: cannot be read as saved training state \(KeyError: 'random_state'\)"),
    ("random_states_0.pkl", _remove, r"random_states_0.pkl is missing; delete .*/state to train the fold from the start"),
    ("optimizer.bin", _plant, r"optimizer.bin: cannot be read as saved training state \(UnpicklingError: .+\)"),
    ("scheduler.bin", _truncate, r"scheduler.bin: cannot be read as saved training state \(RuntimeError: .+\)"),
    ("model.safetensors", _truncate, r"model.safetensors: cannot be read as saved training state \(SafetensorError: .+\)"),
    ("trainer_state.json", _garbage, r"trainer_state.json: not readable JSON \(JSONDecodeError: .+\)"),
    ("../latest.json", _garbage, r"state/latest.json: not readable JSON"),
])
def test_resume_names_a_bad_state_file_in_one_line(work, data_root, name, damage, message):
    target = work / "runs" / "sliced" / "fold0" / "state" / "epoch0001" / name
    marker = work / "payload-ran"
    damage(target, marker)
    before = snapshot(work / "runs")
    with pytest.raises(PipelineError, match=message) as refused:
        train_fold(tiny(work, data_root, "exp.name=sliced"), fold=0, resume=True)
    assert "\n" not in str(refused.value) and "delete" in str(refused.value) and "--restart" in str(refused.value)
    assert not marker.exists(), "a state file was unpickled"
    assert snapshot(work / "runs") == before  # not even run.json records the refused session


def test_latest_json_must_name_its_own_epoch_folder(work, data_root):
    latest = work / "runs" / "sliced" / "fold0" / "state" / "latest.json"
    latest.write_text(json.dumps({"epoch": 1, "dir": "../../../elsewhere"}))
    with pytest.raises(PipelineError, match=r"latest.json: expected \{\"epoch\": N, \"dir\": \"epochNNNN\"\}"):
        train_fold(tiny(work, data_root, "exp.name=sliced"), fold=0, resume=True)


# ---- one writer per fold, and a clean stop on SIGINT / SIGTERM -----------------------------

def _start_long_fold(work: Path, data_root: Path, name: str, launcher: list[str] | None = None) -> subprocess.Popen:
    """A fold of many epochs (it cannot finish before the test signals it), started as a user would."""
    command = [*(launcher or [sys.executable]), "scripts/train_fold.py", "--config", "configs/tiny.yaml", "--fold", "0",
               *overrides(work, data_root, f"exp.name={name}", "train.epochs=10000")]
    return subprocess.Popen(command, cwd=REPO, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_saved_epoch(work: Path, name: str, process: subprocess.Popen, fold: int = 0) -> None:
    """Until the fold has saved an epoch (progress.json is written after the state)."""
    progress = work / "runs" / name / f"fold{fold}" / "progress.json"
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if json.loads(progress.read_text())["epoch"] >= 1:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"no epoch saved within {WAIT_S} s: {process.communicate()[1][-2000:]}")


def _check_stopped(work: Path, name: str, process: subprocess.Popen, code: int) -> str:
    """The run exited with `code` and one last line naming its last saved epoch; returns that line."""
    _, err = process.communicate(timeout=WAIT_S)
    state = work / "runs" / name / "fold0" / "state"
    saved = json.loads((state / "latest.json").read_text())["epoch"]
    line = err.strip().splitlines()[-1]
    assert process.returncode == code and "Traceback" not in err, err[-3000:]
    assert line.startswith(f"stopped by {signal.Signals(code - 128).name}: fold 0 of {name!r} keeps its saved state after epoch {saved} "
                           "(the epoch in progress is dropped); continue with: "), line
    assert sorted(p.name for p in state.iterdir()) == [f"epoch{saved:04d}", "latest.json"]
    record = json.loads((work / "runs" / name / "fold0" / "run.json").read_text())
    assert record["status"] == "interrupted" and record["last_epoch"] == saved
    assert not (work / "oof" / name / "fold0.json").exists() and not (work / "runs" / name / "fold0" / ".lock").exists()
    return line


@pytest.mark.slow
def test_second_writer_is_refused_and_sigterm_stops_at_a_clean_point(tmp_path, data_root):
    first = _start_long_fold(tmp_path, data_root, "busy")
    _wait_for_saved_epoch(tmp_path, "busy", first)
    second = subprocess.run([sys.executable, "scripts/train_fold.py", "--config", "configs/tiny.yaml", "--fold", "0", "--resume",
                             *overrides(tmp_path, data_root, "exp.name=busy", "train.epochs=10000")],
                            cwd=REPO, env=ONE_THREAD, capture_output=True, text=True, timeout=WAIT_S)
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith(
        f"error: {tmp_path / 'runs' / 'busy' / 'fold0' / '.lock'}: fold0 of experiment 'busy' is being written by PID {first.pid} on ")
    assert first.poll() is None  # the first writer trains on
    first.send_signal(signal.SIGTERM)
    _check_stopped(tmp_path, "busy", first, 143)


@pytest.mark.slow
def test_ctrl_c_names_the_command_that_resumes_the_fold(tmp_path, data_root):
    run = _start_long_fold(tmp_path, data_root, "sigint")
    _wait_for_saved_epoch(tmp_path, "sigint", run)
    run.send_signal(signal.SIGINT)
    line = _check_stopped(tmp_path, "sigint", run, 130)
    saved = json.loads((tmp_path / "runs" / "sigint" / "fold0" / "state" / "latest.json").read_text())["epoch"]
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[-1] == "--resume" and command[0] == sys.executable
    resumed = subprocess.run([*command, "--stop-after-epoch", str(saved + 1)], cwd=REPO, env=ONE_THREAD, capture_output=True, text=True,
                             timeout=WAIT_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming sigint fold 0 after epoch {saved}" in resumed.stdout + resumed.stderr
    assert json.loads((tmp_path / "runs" / "sigint" / "fold0" / "state" / "latest.json").read_text())["epoch"] == saved + 1


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit may wait to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_signal_to_accelerate_launch_stops_its_child(tmp_path, data_root):
    """SIGINT sent to the launcher alone (`kill -INT`): accelerate's launcher dies with its own
    traceback, and its training child must not train on unseen: it stops at a clean point too."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    launch = [accelerate, "launch", "-q", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher = _start_long_fold(tmp_path, data_root, "launched", launcher=launch)
    _wait_for_saved_epoch(tmp_path, "launched", launcher)
    lock = json.loads((tmp_path / "runs" / "launched" / "fold0" / ".lock").read_text())
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=WAIT_S)  # the child shares the launcher's stderr: returns once both are gone
    assert "stopped by SIGTERM: fold 0 of 'launched' keeps its saved state after epoch " in err, err[-3000:]
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and _running(lock["pid"]):
        time.sleep(0.1)
    assert not _running(lock["pid"]), "the training child is still running"
    record = json.loads((tmp_path / "runs" / "launched" / "fold0" / "run.json").read_text())
    saved = json.loads((tmp_path / "runs" / "launched" / "fold0" / "state" / "latest.json").read_text())["epoch"]
    assert record["status"] == "interrupted" and record["last_epoch"] == saved


HOLD = "import sys, time\nfrom carvana_seg.locks import exclusive_lock\nwith exclusive_lock(sys.argv[1], 'a fold'):\n    print('held', flush=True)\n    time.sleep(60)\n"


@contextlib.contextmanager
def _held_by_another_process(lock: Path):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait()


def test_parallel_refuses_a_fold_trained_elsewhere_before_starting_any(tmp_path, data_root, monkeypatch):
    """Found by the parent before any child starts (not after the other folds trained), and no
    log is written into the held fold's folder, also for a waiting fold taken meanwhile."""
    monkeypatch.chdir(tmp_path)
    config, extra = str(REPO / "configs" / "tiny.yaml"), overrides(Path(), data_root, "exp.name=held")
    only_the_lock = ["runs", "runs/held", "runs/held/fold1", "runs/held/fold1/.lock"]
    with _held_by_another_process(Path("runs/held/fold1/.lock")) as other:
        with pytest.raises(PipelineError, match=rf"^runs/held/fold1/.lock: fold 1 of 'held' is being trained by PID {other.pid} on .*: "
                                                r"wait for it to finish or stop it first; nothing was started$"):
            check_experiments([(config, extra)], None)
        assert sorted(p.as_posix() for p in Path().rglob("*")) == only_the_lock  # nothing claimed, no cache built

        job = FoldJob(config, extra, tiny(Path(), data_root, "exp.name=held"), fold=1)
        result = fold_task(job.spec(threads=1))  # the task of a waiting fold that another process took since
        assert result["returncode"] is None and result["refused"].startswith(f"being trained by PID {other.pid} on ")
        job.status, job.refused = "failed", result["refused"]
        assert status_line(job)[1] == f"held fold 1: FAILED ({job.refused})"
        assert sorted(p.as_posix() for p in Path().rglob("*")) == only_the_lock


@pytest.mark.slow
def test_ctrl_c_stops_every_fold_of_train_cv_parallel(tmp_path, data_root):
    """The parent gets the Ctrl-C (its children run in their own sessions), stops each child
    once, waits for them and says how to continue; each child stops at a clean point."""
    command = [sys.executable, "scripts/train_cv.py", "--parallel", "2", "--config", "configs/tiny.yaml",
               *overrides(tmp_path, data_root, "exp.name=par", "train.epochs=10000")]
    parent = subprocess.Popen(command, cwd=REPO, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for fold in (0, 1):
        _wait_for_saved_epoch(tmp_path, "par", parent, fold)
    parent.send_signal(signal.SIGINT)
    _, err = parent.communicate(timeout=WAIT_S)
    assert parent.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "stopped by SIGINT: par fold 0, par fold 1: each stopped after its current step, keeping its last saved epoch "
        f"(its log says which); continue with: {shlex.join(command)} (finished folds are skipped, stopped ones resume)")
    for fold in (0, 1):
        fold_dir = tmp_path / "runs" / "par" / f"fold{fold}"
        saved = json.loads((fold_dir / "state" / "latest.json").read_text())["epoch"]
        assert f"stopped by SIGTERM: fold {fold} of 'par' keeps its saved state after epoch {saved} " in (fold_dir / "train.log").read_text()
        assert json.loads((fold_dir / "run.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_ddp_processes_share_a_refusal_and_a_stop(tmp_path, data_root):
    """Under 2-process DDP (gloo on CPU) the lock is the main process's: when it is refused the
    other process stops too instead of waiting at a barrier; and a SIGINT to torchrun stops both
    processes at the same step, with one line."""
    torchrun = [shutil.which("torchrun", path=str(Path(sys.executable).parent)), "--nproc_per_node", "2"]
    lock = tmp_path / "runs" / "ddp" / "fold0" / ".lock"
    with exclusive_lock(lock, "fold0 of experiment 'ddp'"):
        refused = subprocess.run([*torchrun, "scripts/train_fold.py", "--config", "configs/tiny.yaml", "--fold", "0",
                                  *overrides(tmp_path, data_root, "exp.name=ddp", "train.epochs=10000")], cwd=REPO, env=ONE_THREAD, capture_output=True,
                                 text=True, timeout=WAIT_S)
    errors = {line for line in refused.stderr.splitlines() if line.startswith("error: ")}  # the same line from each process
    assert refused.returncode != 0 and len(errors) == 1, refused.stderr[-3000:]
    assert errors.pop().startswith(f"error: {lock}: fold0 of experiment 'ddp' is being written by PID {os.getpid()} on {socket.gethostname()} ")
    assert not (tmp_path / "runs" / "ddp" / "fold0" / "run.json").exists()

    run = _start_long_fold(tmp_path, data_root, "ddp", launcher=torchrun)
    _wait_for_saved_epoch(tmp_path, "ddp", run)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=WAIT_S)
    stops = [line for line in err.splitlines() if line.startswith("stopped by SIGINT: fold 0 of 'ddp' keeps its saved state after epoch ")]
    assert len(stops) == 1 and "the same launcher command" in stops[0], err[-3000:]
    assert json.loads((tmp_path / "runs" / "ddp" / "fold0" / "run.json").read_text())["status"] == "interrupted"
