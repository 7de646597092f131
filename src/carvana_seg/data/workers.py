"""DataLoader workers' errors as the one-line message the user can act on.

Why: torch re-raises an error from a worker process as the same exception type, but with a
message of "Caught DataError in DataLoader worker process 0. Original Traceback ..." and the
worker's whole traceback, so a truncated photo found mid-epoch printed 30 lines instead of the
line naming the file. `worker_message` recovers that line; `worker_errors` re-raises with it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from carvana_seg.errors import PipelineError

_WRAPPED = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback", re.DOTALL)
_LAST_LINE = re.compile(r"^[\w.]+: (?P<message>.+)$")


def worker_message(err: BaseException) -> str:
    """The original one-line message of an error a DataLoader worker raised, else `str(err)`."""
    text = str(err)
    if not _WRAPPED.match(text):
        return text
    lines = [line for line in text.splitlines() if line.strip()]
    match = _LAST_LINE.match(lines[-1]) if lines else None
    return match["message"] if match else text


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """Around a loop over a DataLoader: a PipelineError from a worker is re-raised as the same
    type with the worker's one-line message (the file it names), without the worker's traceback."""
    try:
        yield
    except PipelineError as err:
        message = worker_message(err)
        if message == str(err):
            raise
        raise type(err)(message) from None
