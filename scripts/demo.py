"""Run the whole chain end to end, from data to a validated submission and the leaderboard.

The command line (`--help` shows its examples) lives in carvana_seg/commands/demo.py.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("the demo")  # before the imports below (torch: seconds)
from carvana_seg.commands.demo import main  # noqa: E402

if __name__ == "__main__":
    run(main)
