"""One writer per output: a second holder is refused by name, a dead holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from carvana_seg.errors import PipelineError
from carvana_seg.locks import exclusive_lock

HOLD = """
import sys, time
from carvana_seg.locks import exclusive_lock
with exclusive_lock(sys.argv[1], "the output"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_child(path):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


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
        assert f'"pid": {os.getpid()}' in lock.read_text()
    assert not lock.exists()


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
