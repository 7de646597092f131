"""Export a tuned recipe as an offline inference bundle that predicts without runs/ or internet.

    python scripts/export.py --recipe submissions/NAME.recipe.json --out bundles/NAME/
    python scripts/export.py --recipe submissions/NAME.recipe.json --out bundles/NAME/ --onnx
    python scripts/predict.py --bundle bundles/NAME/ data.root=DIR --backend onnxruntime   # use it

The bundle is one folder with every member's fold weights, the recipe and a manifest (sizes
and sha256): all a Kaggle notebook, say, needs to predict.
`--onnx` adds each fold model as ONNX, checked against torch with onnxruntime at export.
An existing --out is replaced only when it is a bundle export wrote (its dataset-metadata.json
kept) or an empty folder; any other is refused before anything is copied, naming the first file
that is not the bundle's.
The logic lives in carvana_seg/inference/bundle.py.

Manual: docs/offline.md
"""

from carvana_seg.commands.cli import command_parser, console
from carvana_seg.inference.bundle import bundle_bytes, export_bundle


def main() -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--recipe", required=True, help="submissions/<name>.recipe.json (written by scripts/tune.py)")
    parser.add_argument("--out", required=True, help="the bundle folder, e.g. bundles/<name>/ (a plain name; replaces only a bundle export wrote there, or an empty folder)")
    parser.add_argument("--onnx", action="store_true", help="also export each fold model to ONNX (needs onnx and onnxruntime)")
    args = parser.parse_args()
    manifest = export_bundle(args.recipe, args.out, args.onnx)
    for member in manifest["members"]:
        diffs = member.get("onnx_max_abs_diff")
        check = f", ONNX max abs diff on probabilities {max(diffs):.1e}" if diffs else ""
        print(f"  {member['exp']}: {member['folds']} folds at {member['size']}, weight {member['weight']:.3f}{check}")
    print(f"bundle written: {args.out} ({len(manifest['files'])} files, {bundle_bytes(manifest) / 2**20:.1f} MiB)")


cli = console(main)  # the `carvana-export` console command (pyproject.toml)


if __name__ == "__main__":
    cli()
