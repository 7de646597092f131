"""From out-of-fold predictions to a submission recipe.

For each experiment: load every fold's OOF (re-predicted under TTA when asked), check each
training image appears exactly once, and score it at original resolution at every threshold
at once. For several experiments: choose blend weights on OOF by coordinate ascent. Then tune
the blend's threshold, edge refinement (a guided filter, threshold tuned again for each
setting) and post-processing, all on OOF, so the recipe's CV is honest. Every score comes
from the chain prediction uses (recipe/chain.py), applied to the OOF maps.

A step (a tuned threshold instead of 0.5, edge refinement, each post-processing step) is kept
only if it raises CV by more than MIN_GAIN: a gain below that is the OOF's noise, tuned on the
very images it is scored on, and a step kept for it costs time and changes the test masks for
nothing (fill_holes was once kept for +0.00001).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from carvana_seg.config import Config
from carvana_seg.core.experiment import default_device, experiment_config
from carvana_seg.core.host_memory import keep_freed_memory
from carvana_seg.core.kernels import quantize
from carvana_seg.core.metrics import HALF, batch_level_histograms, dice_by_level
from carvana_seg.core.oof import OOF, original_size_batches, original_size_histograms
from carvana_seg.core.paths import ExperimentPaths
from carvana_seg.core.views import parse_tta
from carvana_seg.data.folds import read_folds
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.data.sources import resize_mask
from carvana_seg.errors import PipelineError
from carvana_seg.inference.predictor import oof_with_tta
from carvana_seg.io_utils import atomic_path
from carvana_seg.names import check_plain_name
from carvana_seg.recipe.chain import blend, finish, probability_levels, thresholded_runs
from carvana_seg.recipe.postprocess import POSTPROCESS
from carvana_seg.recipe.recipe import Member as RecipeMember
from carvana_seg.recipe.recipe import Recipe, Refine
from carvana_seg.recipe.runs import Runs, dice, row_sums

WEIGHT_CANDIDATES = (0.0, 0.5, 1.0, 1.5, 2.0)  # relative weights tried per member
ASCENT_ROUNDS = 2
# Guided-filter settings tried (window radius in full-resolution pixels, regularisation eps):
# a larger eps keeps more of the model's own map where the photo's edges are faint.
REFINE_CANDIDATES = (Refine(4, 1e-3), Refine(8, 1e-3), Refine(8, 3e-4))
MIN_GAIN = 1e-4  # CV Dice a step must add to be kept (1e-4 of CV: about one photo in 768 moving by 0.08)


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


def draft_recipe(members: list[Member], weights: list[float], runs_dir: str | Path, tta: str, name: str) -> Recipe:
    """The recipe before tuning: the blend only (threshold 0.5, no refinement, no post-processing)."""
    return Recipe(
        name=name,
        members=tuple(RecipeMember(m.exp, str(runs_dir), float(w), m.cfg.data.folds) for m, w in zip(members, weights)),
        data_root=members[0].cfg.data.root,
        tta=tta,
    )


def member_maps(members: list[Member], indices: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    """Each member's OOF maps of the images `indices`, on `device`."""
    return [torch.from_numpy(m.oof.probs[indices]).to(device, non_blocking=True) for m in members]


def recipe_histograms(recipe: Recipe, members: list[Member], layout: CarvanaLayout, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Per-image level histograms at original size of the recipe's levels (before its threshold)."""

    def levels(indices: np.ndarray, size: tuple[int, int], guide: torch.Tensor | None) -> torch.Tensor:
        return probability_levels(recipe, member_maps(members, indices, device), size, guide)

    return original_size_histograms(members[0].oof, layout, levels, with_guides=recipe.refine is not None, device=device)


def member_histograms(member: Member, tta: str = "none", device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One experiment's original-resolution level histograms, cached in oof/<exp>/ (keyed by the OOF's content)."""
    key = hashlib.sha1(member.oof.probs.tobytes()).hexdigest()
    path = ExperimentPaths.of(member.cfg).oof_dir / f"hist.{tta_label(tta)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) == key:
                return saved["positive"], saved["negative"]
    recipe = draft_recipe([member], [1.0], "", tta, member.exp)
    positive, negative = recipe_histograms(recipe, [member], CarvanaLayout(member.cfg.data.root), device or default_device())
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


def search_weights(members: list[Member], layout: CarvanaLayout, device: torch.device) -> list[float]:
    """Coordinate ascent on blend weights, scored at the first member's resolution (fast)."""
    if len(members) == 1:
        return [1.0]
    size = members[0].oof.probs.shape[1:]
    masks = torch.from_numpy(np.stack([resize_mask(layout.read_mask(str(i)), size) for i in tqdm(members[0].oof.ids, desc="masks", leave=False, disable=None)])).to(device)
    maps = member_maps(members, np.arange(len(masks)), device)

    def score(weights: list[float]) -> float:
        return float(dice_by_level(*(h.cpu().numpy() for h in batch_level_histograms(quantize(blend(maps, weights, size)), masks))).mean(axis=0).max())

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


POSTPROCESS_SUBSETS = [s for r in range(len(POSTPROCESS) + 1) for s in itertools.combinations(POSTPROCESS, r)]


def postprocess_scores(
    recipe: Recipe, members: list[Member], layout: CarvanaLayout, device: torch.device, subsets: list[tuple[str, ...]] = POSTPROCESS_SUBSETS
) -> dict[tuple[str, ...], np.ndarray]:
    """Per-image Dice at original size of the recipe's masks under each subset of post-processing steps, one pass."""
    variants = [recipe.replace(postprocess=s) for s in subsets]
    rows = np.zeros((len(members[0].oof.ids), len(variants)))

    def one(runs: Runs, truth: np.ndarray) -> list[float]:
        truth_sums = row_sums(truth)
        return [dice(finish(v, runs), truth_sums) for v in variants]

    with ThreadPoolExecutor(2) as pool:  # numpy releases the GIL in the row sums
        for indices, size, truth, guide in original_size_batches(members[0].oof, layout, recipe.refine is not None, device, desc="post-processing"):
            runs = thresholded_runs(recipe, member_maps(members, indices, device), size, guide)
            rows[indices] = list(pool.map(one, runs, truth.cpu().numpy()))
    return {s: rows[:, k] for k, s in enumerate(subsets)}


def with_best_threshold(recipe: Recipe, positive: np.ndarray, negative: np.ndarray) -> tuple[Recipe, dict]:
    """The best threshold if it beats 0.5 by more than MIN_GAIN, else 0.5."""
    scores = threshold_scores(positive, negative)
    if scores["dice_at_threshold"] - scores["dice_at_0.5"] <= MIN_GAIN:
        scores.update(threshold=HALF / 255, threshold_level=HALF, dice_at_threshold=scores["dice_at_0.5"])
    return recipe.replace(threshold_level=scores["threshold_level"]), scores


def kept_postprocess(by_subset: dict[tuple[str, ...], np.ndarray]) -> tuple[str, ...]:
    """The best subset of post-processing steps, less every step whose removal costs at most
    MIN_GAIN (dropped one at a time, so each kept step adds more than MIN_GAIN to the rest)."""
    steps = max(by_subset, key=lambda s: (by_subset[s].mean(), -len(s)))
    while steps:
        fewer = [tuple(s for s in steps if s != step) for step in steps]
        cheapest = max(fewer, key=lambda s: by_subset[s].mean())
        if by_subset[cheapest].mean() < by_subset[steps].mean() - MIN_GAIN:
            break
        steps = cheapest
    return steps


def choose_refinement(recipe: Recipe, members: list[Member], layout: CarvanaLayout, scores: dict, device: torch.device) -> tuple[Recipe, dict]:
    """Try each guided-filter setting on OOF (threshold tuned again for each); keep the best
    only if it beats no refinement by more than MIN_GAIN. Returns the recipe with its setting and threshold, and its scores."""
    best, best_scores = recipe, scores
    tried = {recipe.replace(refine=None).refine_label(): scores["dice_at_threshold"]}
    for refine in REFINE_CANDIDATES:
        candidate, candidate_scores = with_best_threshold(recipe.replace(refine=refine), *recipe_histograms(recipe.replace(refine=refine), members, layout, device))
        tried[refine.label()] = candidate_scores["dice_at_threshold"]
        if candidate_scores["dice_at_threshold"] > max(best_scores["dice_at_threshold"], scores["dice_at_threshold"] + MIN_GAIN):
            best, best_scores = candidate, candidate_scores
    return best, dict(best_scores, refine_tried=tried)


def tune(exps: list[str], runs_dir: str | Path = "runs", tta: str = "none", name: str | None = None, out_dir: str | Path = "submissions") -> Recipe:
    """Tune and write `submissions/<name>.recipe.json`; returns the recipe."""
    if name is not None:
        check_plain_name(name, "--name")  # before the long work, not after it
    keep_freed_memory()
    members = [load_member(exp, runs_dir, tta) for exp in exps]
    reference = members[0]
    for member in members[1:]:
        if member.cfg.data.root != reference.cfg.data.root or not np.array_equal(member.oof.ids, reference.oof.ids):
            raise PipelineError(f"experiments {reference.exp!r} and {member.exp!r} were trained on different data; they cannot be blended")
    layout = CarvanaLayout(reference.cfg.data.root)
    device = default_device()

    member_cv = {m.exp: threshold_scores(*member_histograms(m, tta, device)) for m in members}
    name = name or "_".join(exps) + ("" if tta_label(tta) == "none" else f"_tta-{tta_label(tta)}")
    recipe = draft_recipe(members, search_weights(members, layout, device), runs_dir, tta, name)
    histograms = member_histograms(reference, tta, device) if len(members) == 1 else recipe_histograms(recipe, members, layout, device)
    recipe, blend_cv = with_best_threshold(recipe, *histograms)
    recipe, blend_cv = choose_refinement(recipe, members, layout, blend_cv, device)
    by_subset = postprocess_scores(recipe, members, layout, device)
    steps = kept_postprocess(by_subset)
    blend_cv.update(
        postprocess={" + ".join(s) or "none": float(v.mean()) for s, v in by_subset.items()},
        dice_final=float(by_subset[steps].mean()),
    )
    recipe = recipe.replace(postprocess=steps, cv={"blend": blend_cv, "members": member_cv, "images": len(reference.oof.ids)})
    recipe.save(Path(out_dir) / f"{name}.recipe.json")
    return recipe
