"""Print a model's layer table, `Total params` and mult-adds (torchinfo) and its forward GFLOPs.

The command line (`--help` shows its examples) lives in carvana_seg/commands/summarize_model.py.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("the summary")  # before the imports below (torch: seconds)
from carvana_seg.commands.summarize_model import main  # noqa: E402

if __name__ == "__main__":
    run(main)
