"""Export a tuned recipe as an offline inference bundle (weights, recipe, manifest; optionally ONNX).

The command line (`--help` shows its examples) lives in carvana_seg/commands/export.py,
also installed as the console command `carvana-export`.
"""

from carvana_seg.cli import run
from carvana_seg.commands.export import main

if __name__ == "__main__":
    run(main)
