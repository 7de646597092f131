"""Free disk space: remove whole experiments, or the resume state of finished folds.

The command line (`--help` shows its examples) lives in carvana_seg/commands/clean.py.
"""

from carvana_seg.commands.cli import run
from carvana_seg.commands.clean import main

if __name__ == "__main__":
    run(main)
