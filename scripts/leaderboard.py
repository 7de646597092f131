"""Write the ablation leaderboard (leaderboard.md, .csv, .png) from every experiment under runs/.

The command line (`--help` shows its examples) lives in carvana_seg/commands/leaderboard.py,
also installed as the console command `carvana-leaderboard`.
"""

from carvana_seg.commands.cli import quiet_ctrl_c_while_loading, run

quiet_ctrl_c_while_loading("the leaderboard")  # before the imports below (torch: seconds)
from carvana_seg.commands.leaderboard import main  # noqa: E402

if __name__ == "__main__":
    run(main)
