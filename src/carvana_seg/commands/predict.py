"""Predict the test set with a tuned recipe and write a validated submission CSV.

    python scripts/predict.py --recipe submissions/NAME.recipe.json [data.root=DIR] [--gzip]
    python scripts/predict.py --bundle bundles/NAME/ data.root=DIR [--backend onnxruntime]   (scripts/export.py)
    python scripts/predict.py --recipe submissions/NAME.recipe.json --decode device   (decode the photos on the GPU)
    accelerate launch --num_processes 2 scripts/predict.py --recipe ...   (shards the test set)

Interrupted, the same command resumes; the CSV appears only when complete and valid.
"""

import argparse

from carvana_seg.cli import run
from carvana_seg.core.device_photos import DECODES
from carvana_seg.inference.bundle import load_bundle
from carvana_seg.inference.submit import BACKENDS, CHUNK_IMAGES, predict_submission


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--recipe", help="submissions/<name>.recipe.json")
    source.add_argument("--bundle", help="a folder written by scripts/export.py (checked against its manifest)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="onnxruntime: the bundle's ONNX models (export --onnx)")
    parser.add_argument("--out", default=None, help="default: submissions/<name>.csv beside the recipe; <name>.csv here for a bundle")
    parser.add_argument("--gzip", action="store_true", help="write <name>.csv.gz")
    parser.add_argument("--batch-size", type=int, default=0, help="photos per batch (default: 32 on a GPU, 4 on the CPU)")
    parser.add_argument("--workers", type=int, default=2, help="decoding and encoding workers")
    parser.add_argument("--chunk-images", type=int, default=CHUNK_IMAGES, help="images per resumable chunk")
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


def cli() -> None:
    """The `carvana-predict` console command (pyproject.toml): a user-fixable error is one line, not a traceback."""
    run(main)


if __name__ == "__main__":
    cli()
