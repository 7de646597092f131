"""Train every fold of one or several experiments, then print their per-fold and mean Dice.

The command line (`--help` shows its examples) lives in carvana_seg/commands/train.py,
also installed as the console command `carvana-train`.
"""

from carvana_seg.cli import run
from carvana_seg.commands.train import main

if __name__ == "__main__":
    run(main)
