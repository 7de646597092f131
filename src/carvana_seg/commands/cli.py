"""The shared command line of every script: `--config FILE` plus `key=value` overrides."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from carvana_seg.config import Config, ConfigError, load_config
from carvana_seg.data.workers import worker_message
from carvana_seg.errors import PipelineError

# A run without --config: a model and size chosen to train the demo data on a CPU (the file
# says which and why), not the code's bare defaults.
DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "default.yaml"


def parse_config_args(
    doc: str | None, extra: list[tuple[str, dict[str, Any]]] = (), argv: list[str] | None = None
) -> tuple[Config, argparse.Namespace]:
    """Parse `--config`, the script's own flags and trailing `key=value` overrides.

    A config error or a bad flag exits with one line (which names the key or flag) instead of a
    traceback or argparse's usage block.
    """
    parser = OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML preset in configs/ (only what differs from the defaults); default: configs/default.yaml")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.root=input/synthetic train.epochs=3")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
    except ConfigError as err:
        parser.exit(2, f"config error: {err}\n")
    for item in args.overrides:
        print(f"override: {item}", file=sys.stderr)
    return cfg, args


def run(main: Callable[[], None]) -> None:
    """Run a script's main; a user-fixable error exits (status 1) with its one-line message, a
    Ctrl-C that the command does not handle itself with one line (status 130)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _stopped_while_loading:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # loaded: from here the command's own handling
    try:
        main()
    except PipelineError as err:
        sys.exit(f"error: {worker_message(err)}")  # one line, also for an error from a DataLoader worker
    except KeyboardInterrupt:
        print("stopped by SIGINT", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


_loading: list[str] = []  # what the script says it starts, while its imports load


def quiet_ctrl_c_while_loading(what: str) -> None:
    """Called by a script before it imports its command (torch and the rest take seconds): a
    Ctrl-C until `run` starts the command ends it with one line and status 130, instead of a
    KeyboardInterrupt traceback from deep inside an import. Nothing has been written by then."""
    _loading[:] = [what]
    signal.signal(signal.SIGINT, _stopped_while_loading)


def _stopped_while_loading(signum: int, frame) -> None:
    sys.stderr.write(f"stopped by SIGINT before {_loading[0]} started: nothing was written\n")
    sys.stderr.flush()
    os._exit(128 + signum)  # at once: an import may catch an exception, and there is nothing to clean up


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose refusal is one line, `config error: ...`, exit status 2
    (argparse's own puts the whole usage block above it; --help still prints that)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"config error: {message} (see --help)\n")


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer (1 or more)")  # argparse `type=`: refused as the flags are parsed
non_negative_int = _int_at_least(0, "a non-negative integer (0 or more)")
