"""Write grouped, area-stratified folds for a dataset: `folds.csv` (img, car, fold).

The command line (`--help` shows its examples) lives in carvana_seg/commands/make_folds.py.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("making folds")  # before the imports below (torch: seconds)
from carvana_seg.commands.make_folds import main  # noqa: E402

if __name__ == "__main__":
    run(main)
