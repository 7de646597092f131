"""Train every fold of one or several experiments, then print their per-fold and mean Dice.

The command line (`--help` shows its examples) lives in carvana_seg/commands/train.py,
also installed as the console command `carvana-train`.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("training")  # before the imports below (torch: seconds)
from carvana_seg.commands.train import main  # noqa: E402

if __name__ == "__main__":
    run(main)
