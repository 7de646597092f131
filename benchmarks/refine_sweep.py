"""Guided-filter settings beyond the few `tune.py` tries, on one experiment's OOF: is the
edge refinement's optimum inside the tried set, or at its edge?

Each setting is scored as `tune.py` scores it (original size, threshold re-tuned on OOF).

    python benchmarks/refine_sweep.py --exp unet_res_128_soft [--runs-dir runs/carvana] [--tta hflip]
        [--settings 4/1e-3,6/3e-4,8/3e-4,8/1e-4,12/3e-4,16/3e-4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from carvana_seg.store.experiment import default_device  # noqa: E402
from carvana_seg.data.layout import CarvanaLayout  # noqa: E402
from carvana_seg.ops.metrics import threshold_scores  # noqa: E402
from carvana_seg.recipe.tune import REFINE_CANDIDATES, draft_recipe, load_member, recipe_histograms, tta_label  # noqa: E402
from carvana_seg.recipe.recipe import Refine  # noqa: E402


def parse_settings(text: str) -> list[Refine]:
    """`8/3e-4,4/1e-3` -> [Refine(8, 3e-4), Refine(4, 1e-3)]"""
    settings = []
    for item in filter(None, text.split(",")):
        radius, _, eps = item.partition("/")
        settings.append(Refine(int(radius), float(eps)))
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", required=True)
    parser.add_argument("--runs-dir", default="runs/carvana")
    parser.add_argument("--tta", default="hflip")
    parser.add_argument("--settings", default="4/1e-3,6/3e-4,8/3e-4,8/1e-4,12/3e-4,16/3e-4", help="radius/eps pairs")
    args = parser.parse_args()
    member = load_member(args.exp, args.runs_dir, args.tta)
    oof, layout, device = member.oof, CarvanaLayout(member.cfg.data.root), default_device()
    draft = draft_recipe([member], [1.0], args.runs_dir, args.tta, args.exp)

    rows = []
    for refine in [None, *parse_settings(args.settings)]:
        start = time.perf_counter()
        recipe = draft.replace(refine=refine)
        scores = threshold_scores(*recipe_histograms(recipe, [member], layout, device))
        tried = " (tried by tune.py)" if refine in REFINE_CANDIDATES else ""
        rows.append(
            f"| {recipe.refine_label()}{tried} | {scores['dice_at_0.5']:.5f} | {scores['dice_at_threshold']:.5f} "
            f"| {scores['threshold']:.3f} | {time.perf_counter() - start:.0f} s |"
        )
        print(rows[-1], flush=True)
    body = f"""
`{args.exp}` ({member.cfg.data.size}), {len(oof.ids)} OOF images, TTA `{tta_label(args.tta)}`: mean per-image
Dice at 1918x1280 after the guided filter (radius in full-size pixels, eps), at 0.5 and at the
threshold tuned on OOF. No post-processing.

| refinement | Dice at 0.5 | Dice at tuned threshold | threshold | time |
| --- | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}
"""
    write_result(f"refine_sweep_{args.exp}", f"Edge refinement settings on {args.exp}'s OOF", body)


if __name__ == "__main__":
    main()
