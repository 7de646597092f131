"""Validate a submission CSV against the competition's sample submission.

The command line (`--help` shows its examples) lives in carvana_seg/commands/check_submission.py.
"""

from carvana_seg.commands.cli import run
from carvana_seg.commands.check_submission import main

if __name__ == "__main__":
    run(main)
