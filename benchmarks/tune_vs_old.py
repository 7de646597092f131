"""Does tuning through the new chain (recipe/chain.py) give the CV the old per-photo chain gave?

Tunes one trained experiment twice on the same OOF: with the code of an old commit (checked out
into a temporary git worktree, run in a subprocess) and with this checkout, then compares every
score each wrote into its recipe: members at 0.5 and tuned, each refinement setting, each
post-processing subset, and the chosen threshold and refinement.

    python benchmarks/tune_vs_old.py --runs-dir DIR --exp NAME [--tta hflip] [--old-commit 061a38d]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_result  # noqa: E402

from carvana_seg.recipe.tune import tune  # noqa: E402


def old_recipe(commit: str, runs_dir: str, exp: str, tta: str, work: Path) -> dict:
    tree = work / "old"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=REPO, check=True, capture_output=True)
    try:
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        command = [sys.executable, "scripts/tune.py", "--runs-dir", runs_dir, "--exp", exp, "--tta", tta, "--name", "old", "--out-dir", str(work)]
        subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False, capture_output=True)
    return json.loads((work / "old.recipe.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--exp", required=True)
    parser.add_argument("--tta", default="hflip")
    parser.add_argument("--old-commit", default="061a38d", help="the last commit with the per-photo numpy chain")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = old_recipe(args.old_commit, args.runs_dir, args.exp, args.tta, Path(tmp))
    new = tune([args.exp], args.runs_dir, args.tta, name="new", out_dir=tempfile.mkdtemp()).to_json()
    rows = [("member CV at 0.5", old["cv"]["members"][args.exp]["dice_at_0.5"], new["cv"]["members"][args.exp]["dice_at_0.5"]),
            ("member CV at its tuned threshold", old["cv"]["members"][args.exp]["dice_at_threshold"], new["cv"]["members"][args.exp]["dice_at_threshold"])]
    rows += [(f"edge refinement {k}", v, new["cv"]["blend"]["refine_tried"][k]) for k, v in old["cv"]["blend"]["refine_tried"].items()]
    rows += [(f"post-processing {k}", v, new["cv"]["blend"]["postprocess"][k]) for k, v in old["cv"]["blend"]["postprocess"].items() if k in new["cv"]["blend"]["postprocess"]]
    table = "\n".join(f"| {label} | {a:.6f} | {b:.6f} | {b - a:+.7f} |" for label, a, b in rows)
    worst = max(abs(b - a) for _, a, b in rows)
    body = f"""Experiment `{args.exp}` in `{args.runs_dir}`, TTA `{args.tta}`; old chain: commit {args.old_commit}. CV = mean per-image Dice at original size.

| score | old chain | new chain | new - old |
| --- | ---: | ---: | ---: |
{table}

Largest difference: {worst:.2e}. Chosen threshold level: old {old['threshold_level']}, new {new['threshold_level']}; refinement: old {old['refine']}, new {new['refine']};
post-processing: old {old['postprocess']}, new {new['postprocess']} (the new tuning keeps a step only if it adds more than `tune.MIN_GAIN`).
"""
    write_result(f"tune_vs_old_{args.exp}", f"Tuning {args.exp}: old chain vs new chain", body)


if __name__ == "__main__":
    main()
