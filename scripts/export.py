"""Export a tuned recipe as an offline inference bundle (weights, recipe, manifest; optionally ONNX).

The command line (`--help` shows its examples) lives in carvana_seg/commands/export.py,
also installed as the console command `carvana-export`.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("the export")  # before the imports below (torch: seconds)
from carvana_seg.commands.export import main  # noqa: E402

if __name__ == "__main__":
    run(main)
