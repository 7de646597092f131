"""Write the ablation leaderboard (leaderboard.md, .csv, .png) from every experiment under runs/.

The command line (`--help` shows its examples) lives in carvana_seg/commands/leaderboard.py,
also installed as the console command `carvana-leaderboard`.
"""

from carvana_seg.cli import run
from carvana_seg.commands.leaderboard import main

if __name__ == "__main__":
    run(main)
