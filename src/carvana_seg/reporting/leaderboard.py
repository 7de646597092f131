"""The ablation leaderboard: every experiment's CV at original resolution, its cost, and
its difference from a baseline with a paired bootstrap interval, so "A beats B" is a claim
with error bars rather than a guess from the fourth decimal.

Models are compared at thresholds tuned out of fold (each fold's threshold is the best on the
other folds, `ops.metrics.nested_threshold_dice`): a threshold tuned on the very images it is scored
on rewards a fragile, badly calibrated model, whose best threshold moves from fold to fold,
with a gain that does not carry to the test set. Beside the interval stand the folds' spread
and the folds that look unstable (`UNSTABLE_FOLD_GAP`).

Recipes (tune.py's submissions) are ranked in the same table by their nested CV (the whole
tuning run on the other folds, scored on each fold; recipe/nested.py), so a blend stands
beside its own members on the same footing, paired with the baseline through the per-image
nested Dice tune.py writes beside the recipe.
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
from carvana_seg.ops.bootstrap import BOOTSTRAP_SAMPLES, paired_bootstrap  # noqa: E402  (re-exported)
from carvana_seg.store.experiment import experiment_config  # noqa: E402
from carvana_seg.ops.metrics import dice_by_level, nested_threshold_dice, threshold_scores  # noqa: E402
from carvana_seg.store.paths import ExperimentPaths  # noqa: E402
from carvana_seg.errors import PipelineError  # noqa: E402
from carvana_seg.recipe.tune import (  # noqa: E402
    oof_groups,
    image_folds,
    load_member,
    member_histograms,
    per_image_path,
    tta_label,
)
from carvana_seg.io_utils import atomic_path, atomic_write_text  # noqa: E402
from carvana_seg.models import build_model  # noqa: E402
from carvana_seg.models.describe import describe_model  # noqa: E402  (the model column; re-exported)
from carvana_seg.models.stats import forward_flops  # noqa: E402
from carvana_seg.recipe.recipe import Recipe  # noqa: E402
from carvana_seg.reporting.worst import plot_worst  # noqa: E402

# A fold is flagged unstable when its Dice at 0.5 lies this far below the median of the
# experiment's folds (one fold collapsing, as a from-scratch model on an odd studio does), or
# when its kept epoch validated this far below its best epoch (training was still swinging).
UNSTABLE_FOLD_GAP = 0.01
RANKED_BY = "cv_dice_oof_thr"  # CV at out-of-fold thresholds: the column the table and the plot rank by


def gflops(cfg: Config) -> float:
    height, width = cfg.data.size
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        return forward_flops(model, (1, cfg.model.channels, height, width)) / 1e9


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


def board_recipes(runs_dir: Path, names: list[str], submissions_dir: Path, given: list[str] | None) -> tuple[list[tuple[Path, Recipe]], list[str]]:
    """The recipes ranked beside the models: those `given` (each must blend only ranked
    experiments of this board), else every recipe in `submissions_dir` that does (others
    belong to another board). A recipe without a nested CV gets a note instead of a row."""
    paths = [Path(p) for p in given] if given else sorted(submissions_dir.glob("*.recipe.json"))
    ranked, notes = [], []
    for path in paths:
        recipe = Recipe.load(path)  # the file only: its members' runs are not required (another board's may be gone)
        outside = [m.exp for m in recipe.members if m.exp not in names or Path(m.runs_dir).resolve() != runs_dir.resolve()]
        if outside and given:
            raise PipelineError(
                f"recipe {path}: {', '.join(outside)} not among the finished experiments of {runs_dir} ({', '.join(names)}): pass --runs-dir of its runs"
            )
        if outside:
            continue
        if recipe.nested_cv is None:
            notes.append(f"recipe {recipe.name} (no nested CV: tuned by an older version; run scripts/tune.py again)")
        else:
            ranked.append((path, recipe))
    return ranked, notes


def recipe_per_image(path: Path, recipe: Recipe, ids: np.ndarray) -> np.ndarray | None:
    """The recipe's per-image nested Dice (`tune.per_image_path`), or None when that file is
    missing or is not this recipe's (other images, or a mean that is not its nested CV)."""
    scores_path = per_image_path(path)
    if not scores_path.is_file():
        return None
    table = pd.read_csv(scores_path, dtype={"img": str})
    if list(table["img"]) != [str(i) for i in ids] or abs(table["dice_nested"].mean() - recipe.nested_cv.mean) > 1e-9:
        return None
    return table["dice_nested"].to_numpy()


def recipe_result(path: Path, recipe: Recipe, results: dict, tta: str) -> dict:
    """A leaderboard row for a recipe, ranked by its nested CV, plus its per-image nested Dice (or None)."""
    nested = recipe.nested_cv
    used = [m for m in recipe.members if m.weight > 0]
    rows = [results[m.exp]["row"] for m in used]
    held_out = np.array([f.held_out_cv for f in nested.folds])
    row = {
        "experiment": f"{recipe.name} (recipe)",
        "kind": "recipe",
        "model": " + ".join(f"{m.weight:.2f} {m.exp}" for m in used)
        + f", TTA {tta_label(recipe.tta)}, {recipe.refine_label()}, {' + '.join(recipe.postprocess) or 'no post-processing'}",
        "params_M": sum(r["params_M"] for r in rows),
        "GFLOPs": len(recipe.views) * sum(r["GFLOPs"] for r in rows),
        "size": ", ".join(sorted({r["size"] for r in rows})),
        "epochs": "-",
        "train_img_s": float("nan"),
        "wall_min": sum(r["wall_min"] for r in rows),
        "cv_dice_0.5": float("nan"),
        "threshold": recipe.threshold,
        "cv_in_sample": nested.in_sample,
        RANKED_BY: nested.mean,
        "ci_low": nested.low,
        "ci_high": nested.high,
        "fold_min": float(held_out.min()),
        "fold_std": float(held_out.std(ddof=1)),
        f"cv_dice_{tta}": float("nan"),
        "unstable": f"choices: {nested.movement()}",
    }
    per_image = recipe_per_image(path, recipe, results[used[0].exp]["member"].oof.ids)
    return {"row": row, "per_image": per_image, "fold_means": held_out, "scores_path": per_image_path(path)}


def experiment_names(runs_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in runs_dir.glob("*/config.yaml"))


def missing_folds(exp: str, runs_dir: Path) -> list[int]:
    """Folds of `exp` without their OOF summary: such an experiment is not ranked yet."""
    cfg = experiment_config(exp, runs_dir)
    paths = ExperimentPaths.of(cfg)
    return [k for k in range(cfg.data.folds) if not paths.oof_json(k).is_file()]


def empty_split(positive: np.ndarray, per_image: np.ndarray) -> dict:
    """Where some masks are empty: the ranked per-image Dice on the images with an empty mask and
    on the others, apart (an empty prediction of an empty mask scores 1, so the mean alone can
    hide a model that finds nothing); nothing when no mask is empty, so such a board keeps its columns."""
    empty = positive.sum(axis=1) == 0
    if not empty.any():
        return {}
    return {"dice_empty": float(per_image[empty].mean()), "dice_non_empty": float(per_image[~empty].mean()) if (~empty).any() else float("nan")}


def evaluate(exp: str, runs_dir: Path, tta: str) -> dict:
    """One leaderboard row plus the per-image Dice (at out-of-fold thresholds) behind it."""
    member = load_member(exp, runs_dir)
    positive, negative = member_histograms(member)
    plain = threshold_scores(positive, negative)
    folds_of, cars = image_folds(member), oof_groups(member)
    nested = out_of_fold_scores(dice_by_level(positive, negative), folds_of, cars)
    flipped = out_of_fold_scores(dice_by_level(*member_histograms(load_member(exp, runs_dir, tta), tta)), folds_of, cars)
    paths = ExperimentPaths.of(member.cfg)
    folds = [json.loads(paths.oof_json(k).read_text()) for k in range(member.cfg.data.folds)]
    return {
        "row": {
            "experiment": exp,
            "kind": "model",
            "model": describe_model(member.cfg),
            "params_M": folds[0]["parameters"] / 1e6,
            "GFLOPs": gflops(member.cfg),
            "size": str(member.cfg.data.size),
            "epochs": member.cfg.train.epochs,
            "train_img_s": float(np.mean([f["train_images_per_s"] for f in folds])),
            "wall_min": sum(f["train_seconds"] for f in folds) / 60,
            "cv_dice_0.5": plain["dice_at_0.5"],
            "threshold": plain["threshold"],
            "cv_in_sample": plain["dice_at_threshold"],
            RANKED_BY: nested["mean"],
            "ci_low": nested["low"],
            "ci_high": nested["high"],
            "fold_min": float(nested["fold_means"].min()),
            "fold_std": nested["fold_std"],
            f"cv_dice_{tta}": flipped["mean"],
            "unstable": "; ".join(unstable_folds(folds)),
            **empty_split(positive, nested["per_image"]),
        },
        "per_image": nested["per_image"],
        "fold_means": nested["fold_means"],
        "member": member,
    }


def finished_experiments(runs_dir: Path, experiments: list[str] | None) -> tuple[list[str], list[str]]:
    """The experiments to rank (`experiments`, else every one under `runs_dir`) that have all
    their folds, and a note for each one that does not."""
    found = experiment_names(runs_dir)
    if not found:
        raise PipelineError(f"no experiments under {runs_dir}: train some with scripts/train_cv.py")
    unknown = sorted(set(experiments or ()) - set(found))
    if unknown:
        raise PipelineError(f"experiment {unknown[0]!r} not found under {runs_dir} (there: {', '.join(found)})")
    names = list(experiments) if experiments else found
    missing = {name: folds for name in names if (folds := missing_folds(name, runs_dir))}
    unfinished = [f"{name} (folds {', '.join(map(str, folds))} not trained)" for name, folds in missing.items()]
    names = [name for name in names if name not in missing]
    if not names:
        raise PipelineError(f"no finished experiments under {runs_dir}: {'; '.join(unfinished)}")
    return names, unfinished


def vs_baseline(name: str, result: dict, base: dict, baseline: str, cars: np.ndarray) -> str:
    """A row's `vs_baseline` cell: the paired verdict, or why there is none."""
    if result["row"]["kind"] == "recipe" and result["per_image"] is None:
        return f"not paired: {result['scores_path']} missing or not this recipe's (run scripts/tune.py again)"
    if result["row"]["kind"] == "model" and not np.array_equal(result["member"].oof.ids, base["member"].oof.ids):
        return "different data"
    return "baseline" if name == baseline else verdict(result["per_image"], base["per_image"], cars)


def build_leaderboard(
    runs_dir: str | Path = "runs", baseline: str | None = None, tta: str = "hflip", out_dir: str | Path = ".", submissions_dir: str | Path = "submissions",
    experiments: list[str] | None = None, recipes: list[str] | None = None,
) -> pd.DataFrame:
    """Write leaderboard.md/.csv/.png (best first) and oof/<exp>/worst.png for each experiment
    (`experiments`, else all under `runs_dir`). Recipes (`recipes`, else those in
    `submissions_dir` that blend only these experiments) are ranked by their nested CV beside them."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    names, unfinished = finished_experiments(runs_dir, experiments)
    if baseline is not None and baseline not in names:  # both checked before the long evaluation
        raise PipelineError(f"baseline {baseline!r} is not among the experiments: {', '.join(names)}")
    ranked_recipes, unranked = board_recipes(runs_dir, names, Path(submissions_dir), recipes)
    results = {name: evaluate(name, runs_dir, tta) for name in names}
    baseline = baseline or next((n for n in names if results[n]["row"]["model"].startswith("U-Net plain")), names[0])
    recipe_results = {r.name + " (recipe)": recipe_result(path, r, results, tta) for path, r in ranked_recipes}
    base = results[baseline]
    cars = oof_groups(base["member"])
    for result in results.values():
        plot_worst(result["member"], result["per_image"], result["row"]["threshold"], ExperimentPaths.of(result["member"].cfg).worst_png)
    results |= recipe_results
    rows = [dict(result["row"], vs_baseline=vs_baseline(name, result, base, baseline, cars)) for name, result in results.items()]
    table = pd.DataFrame(rows).sort_values(RANKED_BY, ascending=False).reset_index(drop=True)
    table.attrs["unfinished"], table.attrs["unranked_recipes"] = unfinished, unranked

    with atomic_path(out_dir / "leaderboard.csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic_write_text(out_dir / "leaderboard.md", leaderboard_markdown(table, baseline, tta, len(cars), len(set(cars)), unfinished, unranked))
    plot_leaderboard(table, {name: result["fold_means"] for name, result in results.items()}, out_dir / "leaderboard.png")
    return table


def shown_number(value: float, spec: str) -> str:
    return "-" if pd.isna(value) else format(value, spec)


def leaderboard_markdown(table: pd.DataFrame, baseline: str, tta: str, images: int, cars: int, unfinished: list[str], unranked: list[str] = ()) -> str:
    shown = table.copy()
    shown[RANKED_BY] = [f"**{v:.5f}** [{lo:.5f}, {hi:.5f}]" for v, lo, hi in zip(table[RANKED_BY], table["ci_low"], table["ci_high"])]
    shown = shown.drop(columns=["ci_low", "ci_high"])
    for col, spec in (("cv_dice_0.5", ".5f"), (f"cv_dice_{tta}", ".5f"), ("fold_min", ".5f"), ("cv_in_sample", ".5f"), ("params_M", ".2f"), ("GFLOPs", ".2f"),
                      ("train_img_s", ".1f"), ("wall_min", ".1f"), ("threshold", ".3f"), ("fold_std", ".5f")):
        shown[col] = shown[col].map(lambda v, spec=spec: shown_number(v, spec))
    shown["unstable"] = shown["unstable"].replace("", "-")
    for col in ("dice_empty", "dice_non_empty"):
        if col in shown:
            shown[col] = shown[col].map(lambda v: shown_number(v, ".5f"))
    empty_note = (" `dice_empty` and `dice_non_empty`: the ranked per-image Dice on the images whose mask is empty (an empty prediction "
                  "scores 1 there) and on the others, apart." if "dice_empty" in shown else "")
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in shown.itertuples(index=False))
    return (
        "# Ablation leaderboard\n\n"
        f"CV Dice = mean per-image Dice over {images} out-of-fold images ({cars} cars) at original resolution, "
        f"best first by `{RANKED_BY}`, with its 95% interval over cars. For a model: each fold's threshold tuned on the other folds only "
        f"(never on the images it scores); for a recipe (`kind` recipe): its nested CV, the whole tuning (blend weights, threshold, "
        f"edge refinement, post-processing) run on the other folds only and scored on each fold. `cv_in_sample`: tuned and scored on the "
        f"same OOF (a model at the threshold tuned on all OOF, which is `threshold`; a recipe as tune.py reported it): the gap to "
        f"`{RANKED_BY}` is what tuning on the scored images adds. `fold_min` and `fold_std`: the folds' spread. "
        f"`cv_dice_{tta}`: a model with {tta} TTA, out-of-fold thresholds again. "
        f"`unstable`: a fold at 0.5 more than {UNSTABLE_FOLD_GAP} below the folds' median, or whose kept epoch validated more than "
        f"{UNSTABLE_FOLD_GAP} below its best; for a recipe, how far its folds' choices move. `vs_baseline`: difference from `{baseline}` "
        f"in per-image Dice (each row's ranked scores), on the same images, with a 95% paired bootstrap interval that resamples whole cars "
        f"({BOOTSTRAP_SAMPLES} draws).{empty_note}\n\n" + header + body
        + "".join(f"\nNot ranked, folds missing: {note}\n" for note in unfinished)
        + "".join(f"\nNot ranked: {note}\n" for note in unranked)
    )


def plot_leaderboard(table: pd.DataFrame, fold_means: dict[str, np.ndarray], path: Path) -> None:
    """Each row's ranked number with its interval over cars and its folds as small marks;
    recipes in red, with their in-sample CV as a hollow diamond."""
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(table) + 1.8))
    y = np.arange(len(table))[::-1]
    for kind, colour, label in (("model", "black", "model, out-of-fold thresholds"), ("recipe", "tab:red", "recipe, nested CV")):
        rows = (table["kind"] == kind).to_numpy()
        if rows.any():
            centre = table[RANKED_BY].to_numpy()[rows]
            errors = [centre - table["ci_low"].to_numpy()[rows], table["ci_high"].to_numpy()[rows] - centre]
            ax.errorbar(centre, y[rows], xerr=errors, fmt="o", color=colour, capsize=4, zorder=3, label=f"{label} (95% CI, cars)")
    recipes = (table["kind"] == "recipe").to_numpy()
    if recipes.any():
        in_sample = table["cv_in_sample"].to_numpy()[recipes]
        ax.scatter(in_sample, y[recipes], marker="D", facecolors="none", edgecolors="tab:red", zorder=3, label="recipe: in-sample CV")
    for yk, name in zip(y, table["experiment"]):
        ax.scatter(fold_means[name], np.full(len(fold_means[name]), yk), marker="|", s=120, color="tab:blue", zorder=2)
    ax.scatter([], [], marker="|", s=120, color="tab:blue", label="folds")
    labels = [
        f"{e}\n{m}" + (" (unstable)" if u else "") if k == "model" else f"{e}\nnested CV of its tuning"
        for e, m, u, k in zip(table["experiment"], table["model"], table["unstable"], table["kind"])
    ]
    ax.set_yticks(y, labels, fontsize=7)
    values = [*table["ci_low"], *table["ci_high"], *table["cv_in_sample"], *(v for means in fold_means.values() for v in means)]
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
