"""Tune threshold, post-processing and blend weights on out-of-fold predictions; write the recipe.

The command line (`--help` shows its examples) lives in carvana_seg/commands/tune.py,
also installed as the console command `carvana-tune`.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("tuning")  # before the imports below (torch: seconds)
from carvana_seg.commands.tune import main  # noqa: E402

if __name__ == "__main__":
    run(main)
