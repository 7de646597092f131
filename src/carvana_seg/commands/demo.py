"""Run the whole chain end to end, from data to a validated submission and the leaderboard.

    python scripts/demo.py
    python scripts/demo.py --data ../shared/carvana
    python scripts/demo.py --data ../shared/carvana train.epochs=1 data.size=64x96

What `make demo` runs: synthetic Carvana-style data (or the Carvana-layout folder --data DIR),
grouped folds, the ablation set on every fold, an hflip-TTA ensemble tuned on OOF, a validated
submission and the leaderboard. Rerunning it skips what is done.

Manual: docs/data.md (the demo on real data), README.md (`make demo`)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from carvana_seg.commands.cli import command_parser
from carvana_seg.config import Config, load_config
from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.inference.submit import predict_submission
from carvana_seg.recipe.tune import tune
from carvana_seg.reporting.leaderboard import RANKED_BY, build_leaderboard
from carvana_seg.training.cv import train_experiments

DEMO_CONFIGS = sorted(p for p in Path("configs/demo").glob("*.yaml") if not p.name.startswith("_"))
INPUT = Path("input")  # where generated files go: data, folds of outside data, staged test sets, caches
SYNTHETIC_ROOT = INPUT / "synthetic"
SYNTHETIC_ARGS = ["--cars", "8", "--test-cars", "2", "--size", "1918x1280", "--seed", "0"]
ENSEMBLE_NAME = "demo_ensemble"
TTA = "hflip"


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def synthetic_data() -> Path:
    if not (SYNTHETIC_ROOT / "sample_submission.csv").is_file():
        subprocess.run([sys.executable, "scripts/make_synthetic.py", "--out", str(SYNTHETIC_ROOT), "--force", *SYNTHETIC_ARGS], check=True)
    return SYNTHETIC_ROOT


def generated_files_overrides(root: Path) -> list[str]:
    """Where the demo's generated files for `root` go: a folder outside input/ is the user's
    own data, so its folds file goes to input/folds/<name>.csv instead of <root>/folds.csv
    (a `data.folds_file=` override, applied after these, still wins)."""
    inside_input = root.resolve().is_relative_to(INPUT.resolve())
    return [] if inside_input else [f"data.folds_file={INPUT / 'folds' / root.resolve().name}.csv"]


def staged_test_set(root: Path) -> Path:
    """A folder whose test set is the train images, for data without test/ (folds as test).

    The predictions are in-sample, so the file only proves the chain runs on that data.
    """
    stage = INPUT / f"{root.resolve().name}_train_as_test"
    (stage / "test").mkdir(parents=True, exist_ok=True)
    ids = CarvanaLayout(root).train_ids
    for image_id in ids:
        link = stage / "test" / f"{image_id}.jpg"
        if not link.exists():
            link.symlink_to((root / "train" / f"{image_id}.jpg").resolve())
    pd.DataFrame({"img": [f"{i}.jpg" for i in ids], "rle_mask": "1 1"}).to_csv(stage / "sample_submission.csv", index=False)
    return stage


def demo_leaderboard(runs_dir: str, names: list[str], ensemble: str, board_dir: str) -> pd.DataFrame:
    """The leaderboard of the demo's own experiments and its ensemble recipe only: other
    experiments in the same runs folder (the quick start's, say) are the user's, not the demo's."""
    return build_leaderboard(runs_dir, tta=TTA, out_dir=board_dir, experiments=names, recipes=[f"submissions/{ensemble}.recipe.json"])


def run_demo(data: str | None = None, configs: list[Path] = DEMO_CONFIGS, overrides: list[str] = ()) -> None:
    start = time.perf_counter()
    banner("1/6 data")
    root = Path(data) if data else synthetic_data()
    layout = CarvanaLayout(root)
    print(f"{root}: {len(layout.train_ids)} training images")

    banner("2/6 grouped folds")
    # Other data gets its own results namespace, so its experiments never mix with the default's.
    name = root.resolve().name
    runs_dir, oof_dir, ensemble = ("runs", "oof", ENSEMBLE_NAME) if data is None else (f"runs/{name}", f"oof/{name}", f"{ENSEMBLE_NAME}_{name}")
    data_overrides = [f"data.root={root}", f"exp.runs_dir={runs_dir}", f"exp.oof_dir={oof_dir}", *generated_files_overrides(root)]
    cfgs: list[Config] = [load_config(path, [*data_overrides, *overrides]) for path in configs]
    first = cfgs[0].data
    written = write_folds(make_folds(layout, first.folds, first.fold_seed), first.folds_path)
    print(f"{'wrote' if written else 'reusing'} {first.folds_path}")

    banner(f"3/6 training {len(cfgs)} experiments x {first.folds} folds")
    scores = train_experiments(cfgs)
    print(scores.groupby("exp")["dice"].agg(["mean", "std"]).to_string(float_format="%.4f"))

    banner(f"4/6 tuning the {TTA}-TTA ensemble on out-of-fold predictions")
    recipe = tune([c.exp.name for c in cfgs], runs_dir, tta=TTA, name=ensemble)
    for exp, cv in recipe.cv["members"].items():
        print(f"  {exp:16s} CV {cv['dice_at_threshold']:.5f} (threshold {cv['threshold']:.3f})")
    blend, nested = recipe.cv["blend"], recipe.nested_cv
    print(f"  {'ensemble':16s} CV {blend['dice_final']:.5f} (threshold {blend['threshold']:.3f}, post-processing {' + '.join(recipe.postprocess) or 'none'})")
    print(f"  {'nested':16s} CV {nested.mean:.5f} [{nested.low:.5f}, {nested.high:.5f}] (each fold scored by a tuning on the other folds; {nested.movement()})")

    banner("5/6 predicting the test set")
    has_test = (root / "test").is_dir() and (root / "sample_submission.csv").is_file()
    test_root = root if has_test else staged_test_set(root)
    if not has_test:
        print(f"{root} has no test/: predicting its train images as a test set via {test_root} (in-sample)")
    submission = predict_submission(f"submissions/{ensemble}.recipe.json", data_root=str(test_root))

    banner("6/6 leaderboard")
    board_dir = "." if data is None else runs_dir
    table = demo_leaderboard(runs_dir, [c.exp.name for c in cfgs], ensemble, board_dir)
    print(table[["experiment", "model", "cv_in_sample", RANKED_BY, "fold_std", "unstable", "vs_baseline"]].to_string(index=False))

    minutes = (time.perf_counter() - start) / 60
    banner(f"done in {minutes:.1f} min")
    print(
        f"data and folds:  {root}, {first.folds_path}\n"
        f"experiments:     {runs_dir}/<exp>/ (config.yaml, fold<k>/ weights, metrics.csv, learning_curve.png)\n"
        f"OOF:             {oof_dir}/<exp>/fold<k>.npz, .json, worst.png\n"
        f"recipe:          submissions/{ensemble}.recipe.json\n"
        f"submission:      {submission} (validated)\n"
        f"leaderboard:     {board_dir}/leaderboard.md, leaderboard.csv, leaderboard.png"
    )


def main() -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--data", default=None, help="a Carvana-layout folder (default: generate synthetic data)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every demo experiment")
    args = parser.parse_intermixed_args()
    run_demo(args.data, overrides=args.overrides)
