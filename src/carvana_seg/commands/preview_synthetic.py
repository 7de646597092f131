"""A preview grid of a Carvana-layout folder: rows are cars, columns angles, mask tinted and outlined.

    python scripts/preview_synthetic.py --data input/synthetic --out docs/synthetic_preview.png
    python scripts/preview_synthetic.py --data ../shared/carvana --out /tmp/carvana_preview.png --cars 2

Shows at a glance whether masks sit exactly on the cars (thin parts in, shadow out).
The PNG is palette-quantised so the 4x4 grid of 480x320 thumbnails stays small.

Manual: docs/data.md
"""

from pathlib import Path

from carvana_seg.commands.cli import command_parser
from carvana_seg.reporting.preview import preview


def main() -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--data", type=Path, default=Path("input/synthetic"), help="a Carvana-layout folder")
    parser.add_argument("--out", type=Path, default=Path("docs/synthetic_preview.png"))
    parser.add_argument("--cars", type=int, default=4, help="rows of the grid")
    args = parser.parse_args()
    out = preview(args.data, args.out, args.cars)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
