"""What every command line shares: the parser whose refusal is one line, `--config FILE` plus
`key=value` overrides, and `run`, which prints a user-fixable error as one line, not a traceback."""

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


def command_parser(doc: str | None) -> OneLineParser:
    """A command's parser: its module docstring as `--help` (the examples kept as written), and a
    refused flag as one line (`OneLineParser`)."""
    return OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_config_args(
    doc: str | None, extra: list[tuple[str, dict[str, Any]]] = (), argv: list[str] | None = None, several: bool = False
) -> tuple[Config | list[Config], argparse.Namespace]:
    """Parse `--config`, the command's own flags and trailing `key=value` overrides; the config.

    `several=True` is for a command that runs one experiment per preset: `--config` then takes one
    or more files, each is loaded with every override, and the list of configs is returned
    (`args.config` and `args.overrides` hold the files and the overrides).
    A config error or a bad flag exits with one line (which names the key or flag) instead of a
    traceback or argparse's usage block.
    """
    parser = command_parser(doc)
    if several:
        parser.add_argument("--config", nargs="+", required=True, help="one YAML preset per experiment")
    else:
        parser.add_argument("--config", help="YAML preset in configs/ (only what differs from the defaults); default: configs/default.yaml")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    every = " (applied to every experiment)" if several else ""
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"e.g. data.root=input/synthetic train.epochs=3{every}")
    args = parser.parse_intermixed_args(argv)
    if several:  # `--config a.yaml b.yaml k=v`: the list flag also takes the overrides after it
        args.overrides = [item for item in args.config if "=" in item] + args.overrides
        args.config = [item for item in args.config if "=" not in item]
        if not args.config:
            usage_error("--config: expected one or more YAML files")
    try:
        cfgs = [load_config(path, args.overrides) for path in (args.config if several else [args.config or DEFAULT_CONFIG])]
    except ConfigError as err:
        parser.exit(2, f"config error: {err}\n")
    for item in args.overrides:
        print(f"override: {item}", file=sys.stderr)
    return (cfgs if several else cfgs[0]), args


def console(main: Callable[[], None]) -> Callable[[], None]:
    """A console command (pyproject.toml [project.scripts]) running `main` through `run`, so a
    user-fixable error is one line, not a traceback."""

    def command() -> None:
        run(main)

    return command


def usage_error(message: str) -> NoReturn:
    """Refuse the command line as `OneLineParser` does: one line, `config error: ...`, exit status 2."""
    sys.stderr.write(f"config error: {message} (see --help)\n")
    sys.exit(2)


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
        usage_error(message)


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
