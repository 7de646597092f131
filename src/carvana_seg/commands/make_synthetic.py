"""Generate synthetic Carvana-style data in the competition's layout (the project's default data).

    python scripts/make_synthetic.py --out input/synthetic --cars 8 --test-cars 2 --size 1918x1280 --seed 0
    python scripts/make_synthetic.py --layout csv --out input/synthetic_csv --cars 4 --test-cars 1 --size 480x320
    python scripts/make_synthetic.py --layout tgs --out input/synthetic_tgs --images 40 --test-images 8 --size 64x64 --empty-share 0.4

Writes train/, train_masks/ (palette GIFs, 0/1), train_masks.csv, test/, sample_submission.csv and
metadata.csv. Same arguments give byte-identical files. Refuses a non-empty --out unless --force.
--layout folders or csv writes the same cars in another layout, --layout tgs small 16-bit grey
images, --empty-share of them with an empty mask; each is read by its preset in configs/layouts/
(docs/layouts.md).
The data is written into a hidden `.<out>.*.partial` folder first: --out appears only when complete.

Manual: docs/data.md
"""


from carvana_seg.commands.cli import command_parser
from carvana_seg.data.synthetic import ANGLES, generate, parse_size
from carvana_seg.data.synthetic.layouts import SYNTHETIC_LAYOUTS, generate_layout, generate_tgs
from carvana_seg.errors import PipelineError


def main() -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--out", default="input/synthetic", help="dataset folder to create")
    parser.add_argument("--cars", type=int, default=8, help=f"training cars ({ANGLES} photos each)")
    parser.add_argument("--test-cars", type=int, default=2, help="test cars (photos only, in sample_submission.csv)")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT of every photo (default: Carvana's 1918x1280; tgs: 101x101, square)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder (replaces photos, masks)")
    parser.add_argument("--layout", default="carvana", choices=("carvana", *SYNTHETIC_LAYOUTS, "tgs"), help="the layout to write (docs/layouts.md)")
    parser.add_argument("--images", type=int, default=40, help="tgs: training images")
    parser.add_argument("--test-images", type=int, default=8, help="tgs: test images")
    parser.add_argument("--empty-share", type=float, default=0.4, help="tgs: share of training masks that are empty")
    args = parser.parse_args()
    if args.layout == "tgs":
        width, height = parse_size(args.size or "101x101")
        if width != height:
            raise PipelineError(f"--size {args.size}: the tgs layout's images are square")
        out = generate_tgs(args.out, args.images, args.test_images, width, args.empty_share, args.seed, args.force)
        print(f"wrote {args.images} train and {args.test_images} test images ({width}x{width}, 16-bit grey) to {out}")
        return
    size = parse_size(args.size or "1918x1280")
    if args.layout != "carvana":
        out = generate_layout(args.out, args.layout, args.cars, args.test_cars, size, args.seed, args.force)
    else:
        out = generate(args.out, args.cars, args.test_cars, size, args.seed, args.force)
    photos = (args.cars + args.test_cars) * ANGLES
    print(f"wrote {args.cars} train and {args.test_cars} test cars ({photos} photos) to {out}")
