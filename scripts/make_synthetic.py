"""Generate synthetic Carvana-style data in the competition's layout (the default data).

    python scripts/make_synthetic.py --out input/synthetic --cars 8 --test-cars 2 --size 1918x1280 --seed 0
"""

import argparse

from carvana_seg.cli import run
from carvana_seg.config import parse_size
from carvana_seg.data.synthetic import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="input/synthetic")
    parser.add_argument("--cars", type=int, default=8, help="training cars (16 photos each)")
    parser.add_argument("--test-cars", type=int, default=2)
    parser.add_argument("--size", default="1918x1280", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder")
    args = parser.parse_args()
    width, height = parse_size(args.size, "--size")
    out = generate(args.out, args.cars, args.test_cars, (width, height), args.seed, args.force)
    print(f"wrote {args.cars} train and {args.test_cars} test cars ({(args.cars + args.test_cars) * 16} images) to {out}")


if __name__ == "__main__":
    run(main)
