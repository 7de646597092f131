"""Validate a submission CSV against the competition's sample submission.

    python scripts/check_submission.py submissions/NAME.csv --sample input/synthetic/sample_submission.csv
    python scripts/check_submission.py submissions/NAME.csv --sample input/DATA/sample_submission.csv --test-dir input/DATA/test
    python scripts/check_submission.py submissions/NAME.csv --config configs/layouts/tgs.yaml

Checks the header, the row count, the ids and their order, and that every RLE is well formed
(increasing starts, runs in bounds, no overlap) for --image-size (default 1918x1280), or with
--test-dir for each row's own photo (its size read from the header). A .csv.gz is read as is;
a file whose name and content disagree (gzip data not named .gz, or a .gz that is plain text)
is refused, since what reads it goes by the name. With --config, the preset's data settings say
how: the sample and test images of its data.root (in its data.layout) and its RLE format
(data.rle_order, data.rle_start, data.rle_empty; docs/layouts.md).

Manual: docs/submission.md
"""

import sys
from pathlib import Path

from carvana_seg.commands.cli import command_parser
from carvana_seg.config import load_config, parse_size
from carvana_seg.data.layout import image_size
from carvana_seg.data.layouts import open_layout
from carvana_seg.inference.check import check_submission, name_mismatch
from carvana_seg.ops.rle import CARVANA_RLE


def main() -> None:
    parser = command_parser(__doc__)
    parser.add_argument("submission")
    parser.add_argument("--sample", default=None, help="the sample submission (default with --config: its data.root's)")
    parser.add_argument("--config", default=None, help="a preset whose data settings (layout, root, RLE format) the file is checked in")
    parser.add_argument("--image-size", default="1918x1280", help="WIDTHxHEIGHT of every test image")
    parser.add_argument("--test-dir", default=None, help="the test photos: each row checked against its photo's size")
    args = parser.parse_args()
    if args.config:
        layout = open_layout(load_config(args.config).data)
        id_of = dict(zip(layout.submission_names, layout.test_ids))
        sample, fmt = args.sample or layout.sample_path, layout.rle_format
        size = lambda name: layout.photo_size(layout.image_path(id_of.get(name, name), "test"))  # noqa: E731
    elif not args.sample:
        parser.error("--sample is required (or --config, whose data.root holds it)")
    else:
        width, height = parse_size(args.image_size, "--image-size")
        sample, fmt = args.sample, CARVANA_RLE
        size = (lambda name: image_size(Path(args.test_dir) / name)) if args.test_dir else (height, width)
    problems = [why for why in [name_mismatch(args.submission)] if why] + check_submission(args.submission, sample, size, fmt)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"{args.submission}: valid")
