"""Validate a submission against the sample submission: header, row count, ids and their
order, and every RLE well formed (increasing starts, runs in bounds, no overlap).

    python scripts/check_submission.py submissions/NAME.csv --sample input/DATA/sample_submission.csv [--image-size 1918x1280 | --test-dir input/DATA/test]

With --test-dir each row's RLE is checked against its own photo's size (read from the header).
"""

import argparse
import sys
from pathlib import Path

from carvana_seg.cli import run
from carvana_seg.config import parse_size
from carvana_seg.data.layout import image_size
from carvana_seg.inference.check import check_submission


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission")
    parser.add_argument("--sample", required=True)
    parser.add_argument("--image-size", default="1918x1280", help="WIDTHxHEIGHT of every test image")
    parser.add_argument("--test-dir", default=None, help="the test photos: each row checked against its photo's size")
    args = parser.parse_args()
    width, height = parse_size(args.image_size, "--image-size")
    size = (lambda name: image_size(Path(args.test_dir) / name)) if args.test_dir else (height, width)
    problems = check_submission(args.submission, args.sample, size)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"{args.submission}: valid")


if __name__ == "__main__":
    run(main)
