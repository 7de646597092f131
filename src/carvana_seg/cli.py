"""The shared command line of every script: `--config FILE` plus `key=value` overrides."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from carvana_seg.config import Config, ConfigError, load_config
from carvana_seg.data.workers import worker_message
from carvana_seg.errors import PipelineError

# A run without --config: a model and size that train an epoch of the demo data in about a
# minute on a 2-core CPU (the file says which and why), not the code's bare defaults.
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def parse_config_args(
    doc: str | None, extra: list[tuple[str, dict[str, Any]]] = (), argv: list[str] | None = None
) -> tuple[Config, argparse.Namespace]:
    """Parse `--config`, the script's own flags and trailing `key=value` overrides.

    A config error exits with the message (which names the key) instead of a traceback.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    """Run a script's main; a user-fixable error exits (status 1) with its one-line message."""
    try:
        main()
    except PipelineError as err:
        sys.exit(f"error: {worker_message(err)}")  # one line, also for an error from a DataLoader worker
