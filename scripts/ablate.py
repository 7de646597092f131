"""Train a grid of variants of one config on every fold, tune each and rank them on a leaderboard.

The command line (`--help` shows its examples) lives in carvana_seg/commands/ablate.py.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("the ablation")  # before the imports below (torch: seconds)
from carvana_seg.commands.ablate import main  # noqa: E402

if __name__ == "__main__":
    run(main)
