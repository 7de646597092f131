"""One writer per output: a second holder is refused by name, a dead holder's lock is taken over."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from carvana_seg.errors import PipelineError
from carvana_seg.locks import exclusive_lock, holder

HOLD = """
import sys, time
from carvana_seg.locks import exclusive_lock
with exclusive_lock(sys.argv[1], "the output"):
    print("held", flush=True)
    time.sleep(60)
"""


# holds the lock, then forks a process (as a DataLoader forks its workers) that outlives it
HOLD_AND_FORK = """
import os, sys, time
from carvana_seg.locks import exclusive_lock
with exclusive_lock(sys.argv[1], "the output"):
    worker = os.fork()
    if worker == 0:
        time.sleep(60)
        os._exit(0)
    print(worker, flush=True)
    time.sleep(60)
"""
PROBE = "import sys; from carvana_seg.locks import holder; print(holder(sys.argv[1]))"


def hold_in_child(path):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def probe_from_another_process(path) -> str:
    """`holder(path)` as another process sees it (in the holding process it never opens the file)."""
    return subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True).stdout.strip()


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    lock = tmp_path / "out.lock"
    child = hold_in_child(lock)
    try:
        with pytest.raises(PipelineError) as err:
            with exclusive_lock(lock, "the output"):
                pass
        message = str(err.value)
        assert "\n" not in message and str(lock) in message and f"PID {child.pid}" in message
    finally:
        child.kill()
        child.wait()


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path):
    lock = tmp_path / "out.lock"
    child = hold_in_child(lock)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert lock.exists()  # kill -9 leaves the file; the kernel dropped the flock
    with exclusive_lock(lock, "the output"):
        assert probe_from_another_process(lock).startswith(f"PID {os.getpid()} on ")
    assert not lock.exists()


def test_a_process_forked_by_the_holder_does_not_keep_the_lock(tmp_path):
    lock = tmp_path / "out.lock"
    child = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, str(lock)], stdout=subprocess.PIPE, text=True)
    worker = int(child.stdout.readline())
    try:
        assert probe_from_another_process(lock).startswith(f"PID {child.pid} on ")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        os.kill(worker, 0)  # the forked process still runs, the lock file's descriptor open
        assert holder(lock) is None  # at once
        with exclusive_lock(lock, "the output"):
            assert holder(lock).startswith(f"this process (PID {os.getpid()} on ")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


def test_one_process_cannot_take_a_lock_it_holds(tmp_path):
    lock = tmp_path / "out.lock"
    with exclusive_lock(lock, "the output"):
        with pytest.raises(PipelineError, match=r"out.lock: the output is already being written by this process \(PID \d+ on "):
            with exclusive_lock(tmp_path / "." / "out.lock", "the output"):
                pass
        assert lock.exists() and probe_from_another_process(lock).startswith(f"PID {os.getpid()} on ")  # the refusal dropped nothing
    assert not lock.exists() and holder(lock) is None


def test_released_on_error_and_reusable(tmp_path):
    lock = tmp_path / "sub" / "out.lock"
    with pytest.raises(RuntimeError):
        with exclusive_lock(lock, "the output"):
            raise RuntimeError("boom")
    assert not lock.exists()
    start = time.monotonic()
    with exclusive_lock(lock, "the output"):
        pass
    assert time.monotonic() - start < 5
