"""One writer per output: an exclusive lock file that dies with the process that holds it.

    with exclusive_lock(fold_dir / ".lock", f"fold {fold} of {exp!r}"):
        ...  # only this process writes here

The lock is a POSIX record lock (`lockf`) on a small file that records who holds it (host,
PID, command), so a second writer is refused with one line naming the holder. The kernel drops
it when its process dies, however it dies (kill -9 included), so a lock file left by a dead
process is simply taken over. The file is removed on release; a writer that opened it just
before that notices the file it locked is no longer the one at that path and tries again.

Why a record lock and not `flock`: a flock belongs to the open file, so the processes a holder
forks (DataLoader workers) inherit it and keep it after the holder is killed, until they exit; a
record lock belongs to the process and is never inherited. Its price: closing ANY descriptor of
the file in the holding process drops it. So the holder never opens the lock file again (its
record is written through the locked descriptor, and `holder` answers for this process without
opening it), and one process cannot take the same lock twice (the kernel would let it, and the
inner release would free the outer): a path it already holds is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from carvana_seg.errors import PipelineError

_held: set[str] = set()  # the lock files this process holds (real paths)
_held_guard = threading.Lock()
_BUSY = (errno.EACCES, errno.EAGAIN)  # what lockf raises when another process holds the lock


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _this_process() -> str:
    return f"this process (PID {os.getpid()} on {socket.gethostname()})"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"PID {info['pid']} on {info['host']} since {info['since']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def holder(path: str | Path) -> str | None:
    """Who holds the lock at `path` now, as a refusal names them, or None when no live process
    does: a probe that neither creates, takes over nor removes the file."""
    if _key(Path(path)) in _held:
        return _this_process()  # never opened here: closing it would drop this process's own lock
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a read lock: all a read-only descriptor may take
    except OSError as err:
        if err.errno not in _BUSY:
            raise
        return _holder(Path(path))
    finally:
        os.close(fd)
    return None


def _acquire(path: Path, what: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in _BUSY:
                raise
            raise PipelineError(f"{path}: {what} is being written by {_holder(path)}; wait for it to finish or stop it first") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file between our open and our lock: lock the new one


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold `path` as the one writer of `what` for the block; refuse in one line if another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = _key(path)
    with _held_guard:
        if key in _held:
            raise PipelineError(f"{path}: {what} is already being written by {_this_process()}; one writer holds it once")
        _held.add(key)
    try:
        fd = _acquire(path, what)
        try:
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)[:300],
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)  # through the locked descriptor (see the module's docstring)
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)
    finally:
        with _held_guard:
            _held.discard(key)
