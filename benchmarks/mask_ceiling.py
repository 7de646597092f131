"""The best Dice a model trained at a reduced size can reach: each real mask is resized to the
training size as a perfect model would predict it, upsampled back to 1918x1280 the way OOF and
test predictions are (bilinear, threshold at one half) and scored against the original.

Two targets are compared: the 0/1 mask (pixels at least half covered by the car,
`data.soft_masks=false`) and the coverage itself (`data.soft_masks=true`).

    python benchmarks/mask_ceiling.py [--every 4] [--sizes 128x192,160x240,192x288,224x336,320x480]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REAL_CARVANA, write_result  # noqa: E402

from carvana_seg.config import parse_size  # noqa: E402
from carvana_seg.ops.metrics import dice_per_image  # noqa: E402
from carvana_seg.recipe.chain import probability_levels  # noqa: E402
from carvana_seg.recipe.recipe import Recipe  # noqa: E402
from carvana_seg.data.layout import read_mask_file  # noqa: E402
from carvana_seg.data.sources import HALF_COVERED, covered, mask_coverage  # noqa: E402

ONE_MODEL = Recipe.single("ceiling", "runs", 1, str(REAL_CARVANA))  # the chain's upsampling of one map, as a fold is scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=4, help="use every N-th of the real masks")
    parser.add_argument("--sizes", default="128x192,160x240,192x288,224x336,320x480")
    args = parser.parse_args()
    paths = sorted((REAL_CARVANA / "train_masks").glob("*_mask.gif"))[:: args.every]
    if not paths:
        sys.exit(f"no real masks under {REAL_CARVANA / 'train_masks'}: this benchmark needs the real Carvana subset")
    sizes = [parse_size(s, "--sizes") for s in args.sizes.split(",")]

    scores = {(hw, kind): [] for hw in sizes for kind in ("binary", "coverage")}
    for path in tqdm(paths, desc="masks"):
        truth = read_mask_file(path)
        full_height = truth.shape[0]
        for hw in sizes:
            coverage = mask_coverage(truth, hw)
            for kind, levels in (("binary", covered(coverage) * np.uint8(255)), ("coverage", coverage)):
                pred = probability_levels(ONE_MODEL, [torch.from_numpy(np.ascontiguousarray(levels))[None]], truth.shape)[0].numpy() >= HALF_COVERED
                scores[hw, kind].append(dice_per_image(pred[None], truth[None])[0])

    rows = [
        f"| {h}x{w} | 1/{full_height / h:.1f} | {np.mean(scores[(h, w), 'binary']):.5f} | {np.mean(scores[(h, w), 'coverage']):.5f} |"
        for h, w in sizes
    ]
    body = f"""
Mean Dice at 1918x1280 of a perfect prediction at the training size, over {len(paths)} real masks
(every {args.every}th of `{REAL_CARVANA.name}/train_masks`), upsampled bilinearly and thresholded at one half.

| training size | scale | 0/1 target | coverage target (`data.soft_masks`) |
| --- | --- | ---: | ---: |
{chr(10).join(rows)}

A model trained on 0/1 masks learns outlines rounded to whole pixels; trained on coverage it can
place them inside a pixel. The gap between the columns is the Dice that rounding alone costs.
"""
    write_result("mask_ceiling", "Dice ceiling of a training size: 0/1 vs coverage targets", body)


if __name__ == "__main__":
    main()
