"""Predict the test set with a tuned recipe (or an exported bundle) and write a validated submission.

The command line (`--help` shows its examples) lives in carvana_seg/commands/predict.py,
also installed as the console command `carvana-predict`.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("prediction")  # before the imports below (torch: seconds)
from carvana_seg.commands.predict import main  # noqa: E402

if __name__ == "__main__":
    run(main)
