"""How big the offline bundle of a real-data recipe is, and how closely its ONNX folds follow torch.

The bundle's size depends only on the models' shapes, not on their training: this builds a
recipe of one member of `--config` (default configs/carvana_cpu/unet_res_256_shuffle.yaml,
the real-data CPU recipe's model) with `--folds` randomly initialised fold models saved as
training saves them, in a temporary runs/ folder, exports it with and without --onnx
(the recipe's TTA: hflip), and reports the bundles' sizes, the export time and the ONNX
check's max abs difference on probabilities.

    python benchmarks/bundle_size.py [--config configs/carvana_cpu/unet_res_256_shuffle.yaml] [--folds 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_result  # noqa: E402

from carvana_seg.config import load_config  # noqa: E402
from carvana_seg.store.paths import ExperimentPaths  # noqa: E402
from carvana_seg.inference.bundle import bundle_bytes, export_bundle  # noqa: E402
from carvana_seg.models import save_checkpoint  # noqa: E402
from carvana_seg.models.registry import build_model  # noqa: E402
from carvana_seg.recipe.recipe import Member, Recipe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/carvana_cpu/unet_res_256_shuffle.yaml")
    parser.add_argument("--folds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        cfg = load_config(REPO / args.config, [f"exp.runs_dir={work / 'runs'}", f"data.folds={args.folds}"])
        paths = ExperimentPaths.of(cfg)
        paths.claim(cfg)
        for fold in range(args.folds):
            torch.manual_seed(fold)
            save_checkpoint(build_model(cfg.model), cfg, paths.fold_dir(fold))
        parameters = sum(p.numel() for p in build_model(cfg.model).parameters())
        recipe_path = work / "real.recipe.json"
        Recipe("real", (Member(cfg.exp.name, str(work / "runs"), 1.0, args.folds),), "input/carvana", "hflip").save(recipe_path)
        rows = []
        for onnx in (False, True):
            start = time.perf_counter()
            manifest = export_bundle(recipe_path, work / "bundles" / ("real_onnx" if onnx else "real"), onnx=onnx)
            seconds = time.perf_counter() - start
            diffs = manifest["members"][0].get("onnx_max_abs_diff")
            rows.append(
                f"| {'--onnx' if onnx else 'weights only'} | {len(manifest['files'])} | {bundle_bytes(manifest) / 2**20:.1f} MiB "
                f"| {seconds:.1f} s | {f'{max(diffs):.1e}' if diffs else '-'} |"
            )
    body = f"""
Model: `{args.config}` ({cfg.model.name}, {parameters:,} parameters, trained at {cfg.data.size}), {args.folds} folds,
randomly initialised (a bundle's size depends on the shapes only), TTA hflip.

| bundle | files | size | export time | ONNX max abs diff (probabilities, fp32) |
| --- | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

The ONNX check runs each fold at the recipe's input sizes (batches 1 and 3 at the training size).
"""
    write_result("bundle_size", f"Offline bundle of {Path(args.config).stem}, {args.folds} folds", body)


if __name__ == "__main__":
    main()
