"""A preview grid of a Carvana-layout folder: photos with their masks outlined and tinted.

    python scripts/preview_synthetic.py --data input/synthetic --out docs/synthetic_preview.jpg
"""

import argparse

from carvana_seg.cli import run
from carvana_seg.reporting.preview import preview_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="input/synthetic")
    parser.add_argument("--out", default="docs/synthetic_preview.jpg")
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args()
    print(f"wrote {preview_grid(args.data, args.out, args.images)}")


if __name__ == "__main__":
    run(main)
