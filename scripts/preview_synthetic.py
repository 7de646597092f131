"""A preview grid of a Carvana-layout folder: rows are cars, columns angles, mask tinted and outlined.

The command line (`--help` shows its examples) lives in carvana_seg/commands/preview_synthetic.py.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("the preview")  # before the imports below (torch: seconds)
from carvana_seg.commands.preview_synthetic import main  # noqa: E402

if __name__ == "__main__":
    run(main)
