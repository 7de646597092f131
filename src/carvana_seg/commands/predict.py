"""Predict the test set with a tuned recipe and write a validated submission CSV.

    python scripts/predict.py --recipe submissions/NAME.recipe.json data.root=DIR --gzip
    python scripts/predict.py --bundle bundles/NAME/ data.root=DIR --backend onnxruntime   # a bundle of scripts/export.py
    accelerate launch --num_processes 2 scripts/predict.py --recipe submissions/NAME.recipe.json --decode device   # two GPUs, decoding there

Without data.root=DIR it predicts the test set of the data the recipe was tuned on. Several
processes (accelerate launch, torchrun) share the test set out. Interrupted, the same command
resumes; the CSV appears only when complete and valid.

Manual: docs/submission.md (GPUs: docs/gpu.md; bundles: docs/offline.md)
"""

from carvana_seg.commands.cli import command_parser, console, non_negative_int, positive_int
from carvana_seg.data.device_photos import DECODES
from carvana_seg.inference.bundle import load_bundle
from carvana_seg.inference.submit import BACKENDS, CHUNK_IMAGES, predict_submission


def main() -> None:
    parser = command_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--recipe", help="submissions/<name>.recipe.json")
    source.add_argument("--bundle", help="a folder written by scripts/export.py (checked against its manifest)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="onnxruntime: the bundle's ONNX models (export --onnx)")
    parser.add_argument(
        "--out", default=None,
        help="the submission file (not a folder; a name ending in .gz is gzip-compressed); default: submissions/<name>.csv beside the recipe, "
        "<name>.csv here for a bundle",
    )
    parser.add_argument("--gzip", action="store_true", help="write <name>.csv.gz (with --out, its name must end in .gz)")
    # argparse passes a non-text default around `type`: batch size 0 (chosen by the device) is the default, refused when typed
    parser.add_argument("--batch-size", type=positive_int, default=0, help="photos per batch (default: 32 on a GPU, 4 on the CPU)")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="decoding and encoding workers (0: in the main process)")
    parser.add_argument("--chunk-images", type=positive_int, default=CHUNK_IMAGES, help="images per resumable chunk")
    parser.add_argument(
        "--decode",
        default="cpu",
        metavar="{" + ",".join(DECODES) + "}",
        help="cpu: loader workers decode the photos (default); device: workers only read the files and each batch is decoded on the model's device "
        "with torchvision's decode_jpeg (needs torchvision; the inputs differ slightly, so the masks may too)",
    )
    parser.add_argument("overrides", nargs="*", metavar="data.root=DIR", help="predict another Carvana-layout folder")
    args = parser.parse_intermixed_args()
    data_root = None
    for item in args.overrides:
        key, _, value = item.partition("=")
        if key != "data.root" or not value:
            parser.exit(2, f"config error: predict takes only data.root=DIR, got {item!r}\n")
        data_root = value
    recipe = load_bundle(args.bundle) if args.bundle else args.recipe
    out = predict_submission(recipe, data_root, args.out, args.gzip, args.batch_size, args.workers, args.chunk_images, args.backend, args.decode)
    if out is not None:
        print(f"submission written and validated: {out}")


cli = console(main)  # the `carvana-predict` console command (pyproject.toml)


if __name__ == "__main__":
    cli()
