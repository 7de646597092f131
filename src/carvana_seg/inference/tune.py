"""From out-of-fold predictions to a submission recipe.

For each experiment: load every fold's OOF (re-predicted under TTA when asked), check each
training image appears exactly once, and score it at original resolution at every threshold
at once. For several experiments: choose blend weights on OOF by coordinate ascent. Then tune
the blend's threshold, edge refinement (a guided filter, threshold tuned again for each
setting) and post-processing, all on OOF, so the recipe's CV is honest.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from carvana_seg.config import Config
from carvana_seg.core.experiment import experiment_config
from carvana_seg.core.metrics import (
    HALF,
    dice_by_level,
    dice_per_image,
    level_histograms,
)
from carvana_seg.core.oof import (
    OOF,
    blend_upsampled,
    original_size_histograms,
    upsample_probs,
)
from carvana_seg.core.paths import ExperimentPaths
from carvana_seg.core.views import parse_tta
from carvana_seg.data.folds import read_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.data.sources import resize_mask
from carvana_seg.errors import PipelineError
from carvana_seg.inference.predictor import oof_with_tta
from carvana_seg.io_utils import atomic_path, atomic_write_text
from carvana_seg.recipe.postprocess import POSTPROCESS, apply_postprocess
from carvana_seg.recipe.refine import CANDIDATES, refine_label, refine_levels

WEIGHT_CANDIDATES = (0.0, 0.5, 1.0, 1.5, 2.0)  # relative weights tried per member
ASCENT_ROUNDS = 2
LevelsAt = Callable[[int, tuple[int, int]], np.ndarray]  # (image index, original size) -> uint8 levels


@dataclass
class Member:
    """One experiment's OOF over the whole training set, sorted by image id."""

    exp: str
    cfg: Config
    oof: OOF


def tta_label(tta: str) -> str:
    """A file-name-safe label of a TTA spec: 'none', 'hflip', 'hflip+scale0.75'."""
    views = parse_tta(tta)[1:]
    return "+".join(views) if views else "none"


def check_complete(exp: str, ids: list[str], expected: list[str]) -> None:
    """Every training image exactly once across the folds; otherwise name the culprits."""
    counts = Counter(ids)
    duplicated = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(set(expected) - set(counts))
    unknown = sorted(set(counts) - set(expected))
    if duplicated or missing or unknown:
        problems = [
            f"{label} {len(found)} ({', '.join(found[:8])}{', ...' if len(found) > 8 else ''})"
            for label, found in (("missing", missing), ("duplicated", duplicated), ("unknown", unknown))
            if found
        ]
        raise PipelineError(f"OOF of experiment {exp!r} is not one prediction per training image: {'; '.join(problems)}")


def load_member(exp: str, runs_dir: str | Path, tta: str = "none") -> Member:
    cfg = experiment_config(exp, runs_dir)
    paths = ExperimentPaths.of(cfg)
    layout = CarvanaLayout(cfg.data.root)
    views, label = parse_tta(tta), tta_label(tta)
    parts = []
    for fold in range(cfg.data.folds):
        if not paths.oof_npz(fold).is_file():
            raise PipelineError(f"experiment {exp!r}: {paths.oof_npz(fold)} is missing (fold {fold} not trained)")
        parts.append(OOF.load(paths.oof_npz(fold)) if label == "none" else oof_with_tta(cfg, fold, views, label))
    ids = np.concatenate([p.ids for p in parts])
    check_complete(exp, ids.tolist(), read_folds(cfg.data.folds_path, layout, cfg.data.folds)["img"].tolist())
    order = np.argsort(ids)
    merged = OOF(ids[order], np.concatenate([p.probs for p in parts])[order], np.concatenate([p.original_sizes for p in parts])[order])
    return Member(exp, cfg, merged)


def member_histograms(member: Member, tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Original-resolution level histograms, cached in oof/<exp>/ (keyed by the OOF's content)."""
    key = hashlib.sha1(member.oof.probs.tobytes()).hexdigest()
    path = ExperimentPaths.of(member.cfg).oof_dir / f"hist.{tta_label(tta)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) == key:
                return saved["positive"], saved["negative"]
    positive, negative = original_size_histograms(
        member.oof.ids, member.oof.original_sizes, lambda i, size: upsample_probs(member.oof.probs[i], size),
        CarvanaLayout(member.cfg.data.root),
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, key=key, positive=positive, negative=negative)
    return positive, negative


def threshold_scores(positive: np.ndarray, negative: np.ndarray) -> dict:
    """CV Dice at 0.5 and at the best of the 256 levels, from per-image histograms."""
    per_image = dice_by_level(positive, negative)
    mean = per_image.mean(axis=0)
    best = int(np.argmax(mean))
    return {
        "dice_at_0.5": float(mean[HALF]),
        "threshold": best / 255,
        "threshold_level": best,
        "dice_at_threshold": float(mean[best]),
    }


def nested_threshold_dice(per_level: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Per-image Dice when each fold's level is the best mean Dice over the other folds' images."""
    dice, chosen = np.empty(len(per_level)), {}
    for fold in np.unique(folds):
        held_out = folds == fold
        chosen[int(fold)] = int(per_level[~held_out].mean(axis=0).argmax())
        dice[held_out] = per_level[held_out, chosen[int(fold)]]
    return dice, chosen


def blend_levels(members: list[Member], weights: list[float], i: int, size: tuple[int, int]) -> np.ndarray:
    """Weighted mean of the members' probabilities of image i, each resized (bilinear) to `size`."""
    return blend_upsampled([m.oof.probs[i] for m in members], weights, size)


def search_weights(members: list[Member], layout: CarvanaLayout) -> list[float]:
    """Coordinate ascent on blend weights, scored at the first member's resolution (fast)."""
    if len(members) == 1:
        return [1.0]
    size = members[0].oof.probs.shape[1:]
    masks = [resize_mask(layout.read_mask(str(i)), size) for i in tqdm(members[0].oof.ids, desc="masks", leave=False)]

    def score(weights: list[float]) -> float:
        pairs = [level_histograms(blend_levels(members, weights, i, size), masks[i]) for i in range(len(masks))]
        return float(dice_by_level(np.stack([p for p, _ in pairs]), np.stack([n for _, n in pairs])).mean(axis=0).max())

    weights = [1.0] * len(members)
    best = score(weights)
    for _ in range(ASCENT_ROUNDS):
        for m in range(len(members)):
            for candidate in WEIGHT_CANDIDATES:
                trial = weights[:m] + [candidate] + weights[m + 1 :]
                if sum(trial) == 0 or trial == weights:
                    continue
                value = score(trial)
                if value > best + 1e-7:
                    best, weights = value, trial
    total = sum(weights)
    return [w / total for w in weights]


def postprocess_scores(oof: OOF, levels_at: LevelsAt, level: int, layout: CarvanaLayout) -> dict[tuple[str, ...], np.ndarray]:
    """Per-image Dice at original size for every subset of post-processing steps, one pass."""
    subsets = [s for r in range(len(POSTPROCESS) + 1) for s in itertools.combinations(POSTPROCESS, r)]

    def one(i: int) -> list[float]:
        size = (int(oof.original_sizes[i][0]), int(oof.original_sizes[i][1]))
        pred = (levels_at(i, size) >= level).astype(np.uint8)
        truth = layout.read_mask(str(oof.ids[i]), size)[None]
        return [float(dice_per_image(apply_postprocess(pred, list(s))[None], truth)[0]) for s in subsets]

    with ThreadPoolExecutor(2) as pool:
        rows = np.array(list(tqdm(pool.map(one, range(len(oof.ids))), total=len(oof.ids), desc="post-processing", leave=False)))
    return {s: rows[:, k] for k, s in enumerate(subsets)}


def refined_levels(oof: OOF, levels_at: LevelsAt, refine: dict | None, layout: CarvanaLayout) -> LevelsAt:
    """The levels function after the guided-filter setting `refine` (each image's own photo guides it)."""

    def refined_at(i: int, size: tuple[int, int]) -> np.ndarray:
        return refine_levels(levels_at(i, size), layout.image_path(str(oof.ids[i])), refine)

    return refined_at


def refined_scores(oof: OOF, levels_at: LevelsAt, refine: dict | None, layout: CarvanaLayout) -> tuple[LevelsAt, dict]:
    """The levels function after the guided-filter setting `refine`, and its CV at original size."""
    refined_at = refined_levels(oof, levels_at, refine, layout)
    return refined_at, threshold_scores(*original_size_histograms(oof.ids, oof.original_sizes, refined_at, layout))


def choose_refinement(oof: OOF, levels_at: LevelsAt, scores: dict, layout: CarvanaLayout) -> tuple[dict | None, LevelsAt, dict]:
    """Try each guided-filter setting on OOF (threshold tuned again for each); keep the best
    only if it beats no refinement. Returns (setting or None, its levels function, its scores)."""
    best: tuple[dict | None, LevelsAt, dict] = (None, levels_at, scores)
    tried = {refine_label(None): scores["dice_at_threshold"]}
    for refine in CANDIDATES:
        refined_at, candidate = refined_scores(oof, levels_at, refine, layout)
        tried[refine_label(refine)] = candidate["dice_at_threshold"]
        if candidate["dice_at_threshold"] > best[2]["dice_at_threshold"]:
            best = (refine, refined_at, candidate)
    return best[0], best[1], dict(best[2], refine_tried=tried)


def tune(exps: list[str], runs_dir: str | Path = "runs", tta: str = "none", name: str | None = None, out_dir: str | Path = "submissions") -> dict:
    """Tune and write `submissions/<name>.recipe.json`; returns the recipe."""
    members = [load_member(exp, runs_dir, tta) for exp in exps]
    reference = members[0]
    for member in members[1:]:
        if member.cfg.data.root != reference.cfg.data.root or not np.array_equal(member.oof.ids, reference.oof.ids):
            raise PipelineError(f"experiments {reference.exp!r} and {member.exp!r} were trained on different data; they cannot be blended")
    layout = CarvanaLayout(reference.cfg.data.root)

    member_cv = {m.exp: threshold_scores(*member_histograms(m, tta)) for m in members}
    weights = search_weights(members, layout)

    def levels_at(i: int, size: tuple[int, int]) -> np.ndarray:
        return blend_levels(members, weights, i, size)

    if len(members) == 1:
        positive, negative = member_histograms(reference, tta)
    else:
        positive, negative = original_size_histograms(reference.oof.ids, reference.oof.original_sizes, levels_at, layout)
    refine, levels_at, blend_cv = choose_refinement(reference.oof, levels_at, threshold_scores(positive, negative), layout)
    by_subset = postprocess_scores(reference.oof, levels_at, blend_cv["threshold_level"], layout)
    best_subset = max(by_subset, key=lambda s: (by_subset[s].mean(), -len(s)))
    baseline = by_subset[()].mean()
    steps = list(best_subset) if by_subset[best_subset].mean() > baseline else []
    blend_cv.update(
        postprocess={" + ".join(s) or "none": float(v.mean()) for s, v in by_subset.items()},
        dice_final=float(by_subset[tuple(steps)].mean()),
    )
    name = name or "_".join(exps) + ("" if tta_label(tta) == "none" else f"_tta-{tta_label(tta)}")
    recipe = {
        "name": name,
        "members": [{"exp": m.exp, "runs_dir": str(runs_dir), "weight": w, "folds": m.cfg.data.folds} for m, w in zip(members, weights)],
        "tta": tta,
        "threshold": blend_cv["threshold"],
        "threshold_level": blend_cv["threshold_level"],
        "refine": refine,
        "postprocess": steps,
        "cv": {"blend": blend_cv, "members": member_cv, "images": len(reference.oof.ids)},
        "data_root": reference.cfg.data.root,
    }
    atomic_write_text(Path(out_dir) / f"{name}.recipe.json", json.dumps(recipe, indent=2))
    return recipe
