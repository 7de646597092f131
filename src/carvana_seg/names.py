"""Plain names: the one check for a user-given name that becomes a single folder or file name.

Why: an experiment name becomes `runs/<name>` and `oof/<name>`, so `../../tmp/escape` or an
absolute name would write results outside the results folders (and `..` would merge two
experiments into one folder). A plain name is letters, digits, `.`, `_` and `-`, and is not
`.` or `..`; anything else is refused with a message naming the setting.
"""

from __future__ import annotations

import re

from carvana_seg.errors import PipelineError

PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 200  # well below the usual 255-byte file-name limit, leaving room for suffixes


class PlainNameError(PipelineError):
    """A name that must be one plain folder name is empty, a path, or has other characters."""


def check_plain_name(value: object, what: str) -> str:
    """Return `value` if it is a plain folder name, else raise naming `what` (e.g. `exp.name`).

    Plain: 1-200 characters from letters, digits and `._-`, and not `.` or `..`, so the name
    can never climb out of, or stand for, the folder it is joined to.
    """
    if not isinstance(value, str) or not value:
        raise PlainNameError(f"{what}: expected a non-empty name, got {value!r}")
    if not PLAIN_NAME.fullmatch(value) or value in (".", ".."):
        raise PlainNameError(
            f"{what}: {value!r} is not a plain name: use letters, digits and ._- only "
            "(no '/', no spaces, not '.' or '..'), since it names one folder"
        )
    if len(value) > MAX_NAME_LENGTH:
        raise PlainNameError(f"{what}: name is {len(value)} characters long, at most {MAX_NAME_LENGTH} allowed")
    return value
