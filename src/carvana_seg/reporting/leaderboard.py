"""The ablation leaderboard: every experiment's CV at original resolution, its cost, and
its difference from a baseline with a paired bootstrap interval, so "A beats B" is a claim
with error bars rather than a guess from the fourth decimal.
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
from carvana_seg.data.layout import split_id  # noqa: E402
from carvana_seg.errors import PipelineError  # noqa: E402
from carvana_seg.inference.tune import load_member, member_histograms, threshold_scores  # noqa: E402
from carvana_seg.io_utils import atomic_path, atomic_write_text  # noqa: E402
from carvana_seg.models import build_model  # noqa: E402
from carvana_seg.models.stats import forward_flops  # noqa: E402
from carvana_seg.reporting.worst import plot_worst  # noqa: E402

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


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


def describe_model(cfg: Config) -> str:
    m = cfg.model
    if m.name == "unet":
        options = (f" {m.upsample}" if m.upsample != "transpose" else "") + (f" shuffle{m.pixel_shuffle}" if m.pixel_shuffle > 1 else "")
        return f"U-Net {m.block} b{m.base_channels} d{m.depth}" + options
    if m.name == "smp":
        return f"smp {m.arch} {m.encoder}"
    return m.name


def gflops(cfg: Config) -> float:
    height, width = cfg.data.hw
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        return forward_flops(model, (1, cfg.model.in_channels, height, width)) / 1e9


def experiment_names(runs_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in runs_dir.glob("*/config.yaml"))


def missing_folds(exp: str, runs_dir: Path) -> list[int]:
    """Folds of `exp` without their OOF summary: such an experiment is not ranked yet."""
    cfg = experiment_config(exp, runs_dir)
    paths = ExperimentPaths.of(cfg)
    return [k for k in range(cfg.data.folds) if not paths.oof_json(k).is_file()]


def evaluate(exp: str, runs_dir: Path, tta: str) -> dict:
    """One leaderboard row plus the per-image Dice (at the tuned threshold) behind it."""
    member = load_member(exp, runs_dir)
    positive, negative = member_histograms(member)
    plain = threshold_scores(positive, negative)
    flipped = threshold_scores(*member_histograms(load_member(exp, runs_dir, tta), tta))
    per_image = dice_by_level(positive, negative)[:, plain["threshold_level"]]
    paths = ExperimentPaths.of(member.cfg)
    folds = [json.loads(paths.oof_json(k).read_text()) for k in range(member.cfg.data.folds)]
    fold_dice = np.array([f["dice"] for f in folds])
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
            "cv_dice_tuned": plain["dice_at_threshold"],
            f"cv_dice_{tta}": flipped["dice_at_threshold"],
            "fold_mean": float(fold_dice.mean()),
            "fold_std": float(fold_dice.std(ddof=1)) if len(fold_dice) > 1 else 0.0,
        },
        "per_image": per_image,
        "member": member,
    }


def build_leaderboard(runs_dir: str | Path = "runs", baseline: str | None = None, tta: str = "hflip", out_dir: str | Path = ".") -> pd.DataFrame:
    """Write leaderboard.md/.csv/.png (best first) and oof/<exp>/worst.png for each experiment."""
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
            mean, low, high = paired_bootstrap(result["per_image"] - base["per_image"], groups=cars)
            verdict = "no significant difference" if low <= 0 <= high else ("better" if low > 0 else "worse")
            row["vs_baseline"] = f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] {verdict}"
        rows.append(row)
        plot_worst(result["member"], result["per_image"], result["row"]["threshold"], ExperimentPaths.of(result["member"].cfg).oof_dir / "worst.png")
    table = pd.DataFrame(rows).sort_values("cv_dice_tuned", ascending=False).reset_index(drop=True)
    table.attrs["unfinished"] = unfinished

    with atomic_path(out_dir / "leaderboard.csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic_write_text(out_dir / "leaderboard.md", leaderboard_markdown(table, baseline, tta, len(cars), len(set(cars)), unfinished))
    plot_leaderboard(table, out_dir / "leaderboard.png")
    return table


def leaderboard_markdown(table: pd.DataFrame, baseline: str, tta: str, images: int, cars: int, unfinished: list[str]) -> str:
    shown = table.copy()
    for col in ("cv_dice_0.5", "cv_dice_tuned", f"cv_dice_{tta}", "fold_mean"):
        shown[col] = shown[col].map("{:.5f}".format)
    for col, fmt in (("params_M", "{:.2f}"), ("GFLOPs", "{:.2f}"), ("train_img_s", "{:.1f}"), ("wall_min", "{:.1f}"), ("threshold", "{:.3f}"), ("fold_std", "{:.5f}")):
        shown[col] = shown[col].map(fmt.format)
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in shown.itertuples(index=False))
    return (
        "# Ablation leaderboard\n\n"
        f"CV Dice = mean per-image Dice over {images} out-of-fold images ({cars} cars) at original resolution, "
        f"best first. `cv_dice_tuned`: at the threshold tuned on OOF; `cv_dice_{tta}`: with {tta} TTA, threshold tuned again. "
        f"`vs_baseline`: difference from `{baseline}` in per-image Dice at each one's tuned threshold, on the same images, "
        f"with a 95% paired bootstrap interval that resamples whole cars ({BOOTSTRAP_SAMPLES} draws).\n\n" + header + body
        + "".join(f"\nNot ranked, folds missing: {note}\n" for note in unfinished)
    )


def plot_leaderboard(table: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(table) + 1.5))
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["fold_mean"], xerr=table["fold_std"], color="tab:blue", alpha=0.7, capsize=4, label="fold mean +- std (0.5)")
    ax.scatter(table["cv_dice_tuned"], y, color="black", zorder=3, label="CV, tuned threshold")
    ax.set_yticks(y, [f"{e}\n{m}" for e, m in zip(table["experiment"], table["model"])], fontsize=8)
    low = min((table["fold_mean"] - table["fold_std"]).min(), table["cv_dice_tuned"].min())
    high = max((table["fold_mean"] + table["fold_std"]).max(), table["cv_dice_tuned"].max())
    margin = 0.05 * max(high - low, 1e-3)
    ax.set_xlim(max(0.0, low - margin), min(1.0, high + margin))
    ax.set_xlabel("mean per-image Dice (original resolution)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
