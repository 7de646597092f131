"""The ablation leaderboard: every experiment's CV at original resolution, its cost, and
its difference from a baseline with a paired bootstrap interval, so "A beats B" is a claim
with error bars rather than a guess from the fourth decimal.

Models are compared at thresholds tuned out of fold (each fold's threshold is the best on the
other folds, `tune.nested_threshold_dice`): a threshold tuned on the very images it is scored
on rewards a fragile, badly calibrated model, whose best threshold moves from fold to fold,
with a gain that does not carry to the test set. Beside the interval stand the folds' spread
and the folds that look unstable (`UNSTABLE_FOLD_GAP`).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from carvana_seg.config import Config  # noqa: E402
from carvana_seg.core.experiment import experiment_config  # noqa: E402
from carvana_seg.core.metrics import dice_by_level  # noqa: E402
from carvana_seg.core.paths import ExperimentPaths  # noqa: E402
from carvana_seg.data.folds import read_folds  # noqa: E402
from carvana_seg.data.layout import CarvanaLayout, split_id  # noqa: E402
from carvana_seg.errors import PipelineError  # noqa: E402
from carvana_seg.inference.tune import load_member, member_histograms, nested_threshold_dice, threshold_scores  # noqa: E402
from carvana_seg.io_utils import atomic_path, atomic_write_text  # noqa: E402
from carvana_seg.models import build_model  # noqa: E402
from carvana_seg.models.describe import describe_model  # noqa: E402  (the model column; re-exported)
from carvana_seg.models.stats import forward_flops  # noqa: E402
from carvana_seg.recipe.recipe import Recipe, RecipeError  # noqa: E402
from carvana_seg.reporting.worst import plot_worst  # noqa: E402

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
# A fold is flagged unstable when its Dice at 0.5 lies this far below the median of the
# experiment's folds (one fold collapsing, as a from-scratch model on an odd studio does), or
# when its kept epoch validated this far below its best epoch (training was still swinging).
UNSTABLE_FOLD_GAP = 0.01
RANKED_BY = "cv_dice_oof_thr"  # CV at out-of-fold thresholds: the column the table and the plot rank by


def paired_bootstrap(diffs: np.ndarray, groups: np.ndarray | None = None, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """Mean paired difference and its 95% percentile interval.

    With `groups` (e.g. car ids) whole groups are resampled: the 16 photos of a car are not
    16 independent trials, and resampling them one by one would make the interval too narrow.
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = rng.integers(0, len(diffs), (samples, len(diffs)))
        means = diffs[draws].mean(axis=1)
    else:
        labels, inverse = np.unique(groups, return_inverse=True)
        sums, counts = np.bincount(inverse, weights=diffs), np.bincount(inverse)
        draws = rng.integers(0, len(labels), (samples, len(labels)))
        means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diffs.mean()), float(low), float(high)


def gflops(cfg: Config) -> float:
    height, width = cfg.data.hw
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        return forward_flops(model, (1, cfg.model.in_channels, height, width)) / 1e9


def unstable_folds(folds: list[dict], gap: float = UNSTABLE_FOLD_GAP) -> list[str]:
    """One note per suspicious fold (see UNSTABLE_FOLD_GAP), from the folds' oof/<exp>/fold<k>.json."""
    median = float(np.median([f["dice"] for f in folds]))
    notes = []
    for f in folds:
        if f["dice"] < median - gap:
            notes.append(f"fold {f['fold']} {f['dice']:.3f} at 0.5 (median {median:.3f})")
        kept, best = f.get("dice_train_res"), f.get("best_dice_train_res")
        if kept is not None and best is not None and kept < best - gap:
            notes.append(f"fold {f['fold']} kept epoch {f['kept_epoch']} {kept:.3f} < best epoch {f['best_epoch']} {best:.3f}")
    return notes


def out_of_fold_scores(per_level: np.ndarray, folds: np.ndarray, cars: np.ndarray) -> dict:
    """Per-image Dice at out-of-fold thresholds, its mean with a 95% interval over cars, and the folds' spread."""
    per_image, _ = nested_threshold_dice(per_level, folds)
    mean, low, high = paired_bootstrap(per_image, groups=cars)  # the interval of the mean itself, not of a difference
    fold_means = np.array([per_image[folds == k].mean() for k in np.unique(folds)])
    return {
        "per_image": per_image,
        "mean": mean,
        "low": low,
        "high": high,
        "fold_means": fold_means,
        "fold_std": float(fold_means.std(ddof=1)) if len(fold_means) > 1 else 0.0,
    }


def verdict(per_image: np.ndarray, base: np.ndarray, cars: np.ndarray) -> str:
    """'+0.0012 [-0.0005, +0.0031] no significant difference' (paired, whole cars resampled)."""
    mean, low, high = paired_bootstrap(per_image - base, groups=cars)
    word = "no significant difference" if low <= 0 <= high else ("better" if low > 0 else "worse")
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] {word}"


def ensemble_point(runs_dir: Path, names: list[str], submissions_dir: Path) -> tuple[str, float] | None:
    """The newest recipe in `submissions_dir` blending only experiments of this board, and its CV.

    Its CV is tune.py's, tuned on the same OOF (slightly optimistic; benchmarks/recipe_check.py
    re-scores it), so the plot labels it as such.
    """
    found = []
    for path in sorted(Path(submissions_dir).glob("*.recipe.json")):
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RecipeError(f"recipe {path} is not JSON: {err}") from None
        recipe = Recipe.from_json(raw, str(path))  # not Recipe.load: another board's members may be gone
        same_board = all(m.exp in names and Path(m.runs_dir).resolve() == runs_dir.resolve() for m in recipe.members)
        if same_board and len(recipe.members) > 1 and "dice_final" in recipe.cv.get("blend", {}):
            found.append((path.stat().st_mtime, recipe.name, float(recipe.cv["blend"]["dice_final"])))
    return max(found)[1:] if found else None


def experiment_names(runs_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in runs_dir.glob("*/config.yaml"))


def missing_folds(exp: str, runs_dir: Path) -> list[int]:
    """Folds of `exp` without their OOF summary: such an experiment is not ranked yet."""
    cfg = experiment_config(exp, runs_dir)
    paths = ExperimentPaths.of(cfg)
    return [k for k in range(cfg.data.folds) if not paths.oof_json(k).is_file()]


def evaluate(exp: str, runs_dir: Path, tta: str) -> dict:
    """One leaderboard row plus the per-image Dice (at out-of-fold thresholds) behind it."""
    member = load_member(exp, runs_dir)
    positive, negative = member_histograms(member)
    plain = threshold_scores(positive, negative)
    fold_of = read_folds(member.cfg.data.folds_path, CarvanaLayout(member.cfg.data.root), member.cfg.data.folds).set_index("img")["fold"]
    image_folds = fold_of.loc[[str(i) for i in member.oof.ids]].to_numpy()
    cars = np.array([split_id(str(i))[0] for i in member.oof.ids])
    nested = out_of_fold_scores(dice_by_level(positive, negative), image_folds, cars)
    flipped = out_of_fold_scores(dice_by_level(*member_histograms(load_member(exp, runs_dir, tta), tta)), image_folds, cars)
    paths = ExperimentPaths.of(member.cfg)
    folds = [json.loads(paths.oof_json(k).read_text()) for k in range(member.cfg.data.folds)]
    return {
        "row": {
            "experiment": exp,
            "model": describe_model(member.cfg),
            "params_M": folds[0]["parameters"] / 1e6,
            "GFLOPs": gflops(member.cfg),
            "size": member.cfg.data.size,
            "epochs": member.cfg.train.epochs,
            "train_img_s": float(np.mean([f["train_images_per_s"] for f in folds])),
            "wall_min": sum(f["train_seconds"] for f in folds) / 60,
            "cv_dice_0.5": plain["dice_at_0.5"],
            "threshold": plain["threshold"],
            RANKED_BY: nested["mean"],
            "ci_low": nested["low"],
            "ci_high": nested["high"],
            "fold_min": float(nested["fold_means"].min()),
            "fold_std": nested["fold_std"],
            f"cv_dice_{tta}": flipped["mean"],
            "unstable": "; ".join(unstable_folds(folds)),
        },
        "per_image": nested["per_image"],
        "fold_means": nested["fold_means"],
        "member": member,
    }


def build_leaderboard(
    runs_dir: str | Path = "runs", baseline: str | None = None, tta: str = "hflip", out_dir: str | Path = ".", submissions_dir: str | Path = "submissions"
) -> pd.DataFrame:
    """Write leaderboard.md/.csv/.png (best first) and oof/<exp>/worst.png for each experiment;
    the plot adds the newest ensemble recipe of these experiments found in `submissions_dir`."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    names = experiment_names(runs_dir)
    if not names:
        raise PipelineError(f"no experiments under {runs_dir}: train some with scripts/train_cv.py")
    missing = {name: folds for name in names if (folds := missing_folds(name, runs_dir))}
    unfinished = [f"{name} (folds {', '.join(map(str, folds))} not trained)" for name, folds in missing.items()]
    names = [name for name in names if name not in missing]
    if not names:
        raise PipelineError(f"no finished experiments under {runs_dir}: {'; '.join(unfinished)}")
    results = {name: evaluate(name, runs_dir, tta) for name in names}
    baseline = baseline or next((n for n in names if results[n]["row"]["model"].startswith("U-Net plain")), names[0])
    if baseline not in results:
        raise PipelineError(f"baseline {baseline!r} is not among the experiments: {', '.join(names)}")
    base = results[baseline]
    cars = np.array([split_id(str(i))[0] for i in base["member"].oof.ids])
    rows = []
    for name, result in results.items():
        row = dict(result["row"])
        if not np.array_equal(result["member"].oof.ids, base["member"].oof.ids):
            row["vs_baseline"] = "different data"
        elif name == baseline:
            row["vs_baseline"] = "baseline"
        else:
            row["vs_baseline"] = verdict(result["per_image"], base["per_image"], cars)
        rows.append(row)
        plot_worst(result["member"], result["per_image"], result["row"]["threshold"], ExperimentPaths.of(result["member"].cfg).oof_dir / "worst.png")
    table = pd.DataFrame(rows).sort_values(RANKED_BY, ascending=False).reset_index(drop=True)
    table.attrs["unfinished"] = unfinished
    fold_means = {name: result["fold_means"] for name, result in results.items()}

    with atomic_path(out_dir / "leaderboard.csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic_write_text(out_dir / "leaderboard.md", leaderboard_markdown(table, baseline, tta, len(cars), len(set(cars)), unfinished))
    plot_leaderboard(table, fold_means, ensemble_point(runs_dir, names, Path(submissions_dir)), out_dir / "leaderboard.png")
    return table


def leaderboard_markdown(table: pd.DataFrame, baseline: str, tta: str, images: int, cars: int, unfinished: list[str]) -> str:
    shown = table.copy()
    shown[RANKED_BY] = [f"**{v:.5f}** [{lo:.5f}, {hi:.5f}]" for v, lo, hi in zip(table[RANKED_BY], table["ci_low"], table["ci_high"])]
    shown = shown.drop(columns=["ci_low", "ci_high"])
    for col in ("cv_dice_0.5", f"cv_dice_{tta}", "fold_min"):
        shown[col] = shown[col].map("{:.5f}".format)
    for col, fmt in (("params_M", "{:.2f}"), ("GFLOPs", "{:.2f}"), ("train_img_s", "{:.1f}"), ("wall_min", "{:.1f}"), ("threshold", "{:.3f}"), ("fold_std", "{:.5f}")):
        shown[col] = shown[col].map(fmt.format)
    shown["unstable"] = shown["unstable"].replace("", "-")
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in shown.itertuples(index=False))
    return (
        "# Ablation leaderboard\n\n"
        f"CV Dice = mean per-image Dice over {images} out-of-fold images ({cars} cars) at original resolution, "
        f"best first by `{RANKED_BY}`: each fold's threshold tuned on the other folds only (never on the images it scores), "
        f"with its 95% interval over cars; `fold_min` and `fold_std`: the folds' spread at those thresholds. "
        f"`threshold`: the one tuned on all OOF (what tune.py would pick). `cv_dice_{tta}`: with {tta} TTA, out-of-fold thresholds again. "
        f"`unstable`: a fold at 0.5 more than {UNSTABLE_FOLD_GAP} below the folds' median, or whose kept epoch validated more than "
        f"{UNSTABLE_FOLD_GAP} below its best. `vs_baseline`: difference from `{baseline}` in per-image Dice at out-of-fold thresholds, "
        f"on the same images, with a 95% paired bootstrap interval that resamples whole cars ({BOOTSTRAP_SAMPLES} draws).\n\n" + header + body
        + "".join(f"\nNot ranked, folds missing: {note}\n" for note in unfinished)
    )


def plot_leaderboard(table: pd.DataFrame, fold_means: dict[str, np.ndarray], ensemble: tuple[str, float] | None, path: Path) -> None:
    """Each experiment's ranked number (CV at out-of-fold thresholds) with its interval over
    cars, its folds as small marks, and the ensemble recipe when there is one."""
    rows = len(table) + (ensemble is not None)
    fig, ax = plt.subplots(figsize=(8, 0.5 * rows + 1.8))
    y = np.arange(len(table))[::-1] + (ensemble is not None)
    centre = table[RANKED_BY].to_numpy()
    ax.errorbar(centre, y, xerr=[centre - table["ci_low"], table["ci_high"] - centre], fmt="o", color="black", capsize=4, zorder=3, label="CV, out-of-fold thresholds (95% CI over cars)")
    for yk, name in zip(y, table["experiment"]):
        ax.scatter(fold_means[name], np.full(len(fold_means[name]), yk), marker="|", s=120, color="tab:blue", zorder=2)
    ax.scatter([], [], marker="|", s=120, color="tab:blue", label="folds")
    labels = [f"{e}\n{m}" + (" (unstable)" if u else "") for e, m, u in zip(table["experiment"], table["model"], table["unstable"])]
    values = [*table["ci_low"], *table["ci_high"], *(v for means in fold_means.values() for v in means)]
    if ensemble is not None:
        ax.scatter([ensemble[1]], [0], marker="D", color="tab:red", zorder=3, label="ensemble (tuned on the same OOF)")
        labels.append(f"{ensemble[0]}\nensemble")
        values.append(ensemble[1])
    ax.set_yticks([*y, *([0] if ensemble is not None else [])], labels, fontsize=8)
    low, high = min(values), max(values)
    margin = 0.05 * max(high - low, 1e-3)
    ax.set_xlim(max(0.0, low - margin), min(1.0, high + margin))
    ax.set_xlabel("mean per-image Dice (original resolution)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
