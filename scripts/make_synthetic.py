"""Generate synthetic Carvana-style data in the competition's layout (the project's default data).

The command line (`--help` shows its examples) lives in carvana_seg/commands/make_synthetic.py.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("writing data")  # before the imports below (torch: seconds)
from carvana_seg.commands.make_synthetic import main  # noqa: E402

if __name__ == "__main__":
    run(main)
