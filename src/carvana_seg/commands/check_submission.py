"""Validate a submission CSV against the competition's sample submission.

    python scripts/check_submission.py submissions/NAME.csv --sample input/synthetic/sample_submission.csv
    python scripts/check_submission.py submissions/NAME.csv --sample input/DATA/sample_submission.csv --test-dir input/DATA/test
    python scripts/check_submission.py submissions/NAME.csv.gz --sample input/DATA/sample_submission.csv --image-size 1918x1280

Checks the header, the row count, the ids and their order, and that every RLE is well formed
(increasing starts, runs in bounds, no overlap) for --image-size (default 1918x1280), or with
--test-dir for each row's own photo (its size read from the header). A .csv.gz is read as is;
a file whose name and content disagree (gzip data not named .gz, or a .gz that is plain text)
is refused, since what reads it goes by the name.

Manual: docs/submission.md
"""

import argparse
import sys
from pathlib import Path

from carvana_seg.commands.cli import run
from carvana_seg.config import parse_size
from carvana_seg.data.layout import image_size
from carvana_seg.inference.check import check_submission, name_mismatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission")
    parser.add_argument("--sample", required=True)
    parser.add_argument("--image-size", default="1918x1280", help="WIDTHxHEIGHT of every test image")
    parser.add_argument("--test-dir", default=None, help="the test photos: each row checked against its photo's size")
    args = parser.parse_args()
    width, height = parse_size(args.image_size, "--image-size")
    size = (lambda name: image_size(Path(args.test_dir) / name)) if args.test_dir else (height, width)
    problems = [why for why in [name_mismatch(args.submission)] if why] + check_submission(args.submission, args.sample, size)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"{args.submission}: valid")
