"""DataLoader workers' errors as the one-line message the user can act on.

Why: torch re-raises an error from a worker process as the same exception type, but with a
message of "Caught DataError in DataLoader worker process 0. Original Traceback ..." and the
worker's whole traceback, which buries the line naming the file (a truncated photo found
mid-epoch, say). `worker_message` recovers that line; `commands.cli.run` prints it alone.
"""

from __future__ import annotations

import re

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

