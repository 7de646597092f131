"""Generate synthetic Carvana-style data in the competition's layout (the project's default data).

    python scripts/make_synthetic.py --out input/synthetic --cars 8 --test-cars 2 --size 1918x1280 --seed 0
    python scripts/make_synthetic.py --out input/synthetic_small --cars 4 --test-cars 1 --size 480x320
    python scripts/make_synthetic.py --out input/synthetic --cars 16 --seed 1 --force

Writes train/, train_masks/ (palette GIFs, 0/1), train_masks.csv, test/, sample_submission.csv and
metadata.csv. Same arguments give byte-identical files. Refuses a non-empty --out unless --force.
The data is written into a hidden `.<out>.*.partial` folder first: --out appears only when complete.

Manual: docs/data.md
"""

import argparse

from carvana_seg.commands.cli import run
from carvana_seg.data.synthetic import ANGLES, generate, parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="input/synthetic", help="dataset folder to create")
    parser.add_argument("--cars", type=int, default=8, help=f"training cars ({ANGLES} photos each)")
    parser.add_argument("--test-cars", type=int, default=2, help="test cars (photos only, in sample_submission.csv)")
    parser.add_argument("--size", default="1918x1280", help="WIDTHxHEIGHT of every photo (Carvana: 1918x1280)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder (replaces photos, masks)")
    args = parser.parse_args()
    out = generate(args.out, args.cars, args.test_cars, parse_size(args.size), args.seed, args.force)
    photos = (args.cars + args.test_cars) * ANGLES
    print(f"wrote {args.cars} train and {args.test_cars} test cars ({photos} photos) to {out}")
