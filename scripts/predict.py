"""Predict the test set with a tuned recipe (or an exported bundle) and write a validated submission.

The command line (`--help` shows its examples) lives in carvana_seg/commands/predict.py,
also installed as the console command `carvana-predict`.
"""

from carvana_seg.cli import run
from carvana_seg.commands.predict import main

if __name__ == "__main__":
    run(main)
