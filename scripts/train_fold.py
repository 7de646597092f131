"""Train one fold of an experiment and write its out-of-fold predictions.

The command line (`--help` shows its examples) lives in carvana_seg/commands/train_fold.py.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("training")  # before the imports below (torch: seconds)
from carvana_seg.commands.train_fold import main  # noqa: E402

if __name__ == "__main__":
    run(main)
