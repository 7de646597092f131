"""From out-of-fold predictions to a submission recipe.

For each experiment: load every fold's OOF (re-predicted under TTA when asked), check each
training image appears exactly once, and score it at original resolution at every threshold
at once. For several experiments: choose blend weights on OOF (`BLEND_RULES`). Then tune
the blend's threshold, edge refinement (a guided filter, threshold tuned again for each
setting) and post-processing, all on OOF. Every score comes from the chain prediction uses
(recipe/chain.py), applied to the OOF maps, at original resolution.

The in-sample CV (tuned and scored on the same OOF) flatters the recipe: every choice was
made on the images that score it. The nested CV runs the whole tuning once per fold on the
other folds' OOF only and scores what it chose on the held-out fold, so each image is scored
by choices made without it. Every candidate (blend weights, refinement, threshold level) is
scored once on every image (`Candidates`); each tuning only selects on its own images'
rows, so the K extra tunings cost the passes their new candidates need, not K whole tunings.

A step (a tuned threshold instead of 0.5, edge refinement, each post-processing step) is kept
only if it raises CV by more than MIN_GAIN: a gain below that is the OOF's noise, tuned on the
very images it is scored on, and a step kept for it costs time and changes the test masks for
nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from carvana_seg.ops.bootstrap import paired_bootstrap
from carvana_seg.store.experiment import default_device
from carvana_seg.ops.host_memory import keep_freed_memory
from carvana_seg.ops.kernels import quantize
from carvana_seg.ops.metrics import HALF, batch_level_histograms, dice_by_level, threshold_scores
from carvana_seg.store.oof import ExperimentOOF, original_size_batches
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.recipe.tta import parse_tta
from carvana_seg.data.folds import read_folds
from carvana_seg.data.layout import CarvanaLayout, split_id
from carvana_seg.data.layouts import open_layout
from carvana_seg.data.sources import resize_mask
from carvana_seg.errors import PipelineError
from carvana_seg.store.tta_oof import load_experiment_oof
from carvana_seg.io_utils import atomic_path
from carvana_seg.names import check_plain_name
from carvana_seg.recipe.chain import blend, finish, oof_histograms, thresholded_runs
from carvana_seg.recipe.nested import BLEND_RULES, FoldTuning, NestedCV
from carvana_seg.recipe.postprocess import POSTPROCESS
from carvana_seg.recipe.recipe import Member, Recipe, Refine
from carvana_seg.ops.rle import Runs, dice, row_sums

WEIGHT_CANDIDATES = (0.0, 0.5, 1.0, 1.5, 2.0)  # relative weights tried per member
ASCENT_ROUNDS = 2
# Guided-filter settings tried (window radius in full-resolution pixels, regularisation eps):
# a larger eps keeps more of the model's own map where the photo's edges are faint.
REFINE_CANDIDATES = (Refine(4, 1e-3), Refine(8, 1e-3), Refine(8, 3e-4))
MIN_GAIN = 1e-4  # CV Dice a step must add to be kept (1e-4 of CV: about one photo in 768 moving by 0.08)
# How blend weights are chosen: a rule of recipe/nested.py BLEND_RULES, or AUTO: each rule tuned,
# the one whose nested CV is best kept. Which rule generalises depends on the data (an unstable
# member, few cars), and the in-sample CV always prefers the searched weights it was fitted on.
AUTO = "auto"
BLEND_CHOICES = (AUTO, *BLEND_RULES)
DEFAULT_BLEND_RULE = AUTO
SHRINKAGE = 0.5  # "shrink": how far the searched weights move toward equal weights


def tta_label(tta: str) -> str:
    """A file-name-safe label of a TTA spec: 'none', 'hflip', 'hflip+scale0.75'."""
    views = parse_tta(tta)[1:]
    return "+".join(views) if views else "none"


def load_member(exp: str, runs_dir: str | Path, tta: str = "none") -> ExperimentOOF:
    """The experiment's whole OOF under the TTA `tta` (store/tta_oof.load_experiment_oof)."""
    return load_experiment_oof(exp, runs_dir, parse_tta(tta), tta_label(tta))


def draft_recipe(members: list[ExperimentOOF], weights: list[float], runs_dir: str | Path, tta: str, name: str) -> Recipe:
    """The recipe before tuning: the blend only (threshold 0.5, no refinement, no post-processing)."""
    return Recipe(
        name=name,
        members=tuple(Member(m.exp, str(runs_dir), float(w), m.cfg.data.folds) for m, w in zip(members, weights)),
        data_root=members[0].cfg.data.root,
        tta=tta,
    )


def member_maps(members: list[ExperimentOOF], indices: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    """Each member's OOF maps of the images `indices`, on `device`."""
    return [torch.from_numpy(m.oof.probs[indices]).to(device, non_blocking=True) for m in members]


def recipe_histograms(recipe: Recipe, members: list[ExperimentOOF], layout: CarvanaLayout, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Per-image level histograms at original size of the recipe's levels (before its threshold)."""
    return oof_histograms(recipe, [m.oof for m in members], layout, device)


def member_histograms(member: ExperimentOOF, tta: str = "none", device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One experiment's original-resolution level histograms, cached in oof/<exp>/ (keyed by the OOF's content)."""
    key = hashlib.sha1(member.oof.probs.tobytes()).hexdigest()
    path = ExperimentPaths.of(member.cfg).histograms_npz(tta_label(tta))
    if path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) == key:
                return saved["positive"], saved["negative"]
    recipe = draft_recipe([member], [1.0], "", tta, member.exp)
    positive, negative = recipe_histograms(recipe, [member], open_layout(member.cfg.data), device or default_device())
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, key=key, positive=positive, negative=negative)
    return positive, negative


POSTPROCESS_SUBSETS = [s for r in range(len(POSTPROCESS) + 1) for s in itertools.combinations(POSTPROCESS, r)]


def postprocess_scores(
    recipe: Recipe, members: list[ExperimentOOF], layout: CarvanaLayout, device: torch.device, subsets: list[tuple[str, ...]] = POSTPROCESS_SUBSETS
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


def image_folds(member: ExperimentOOF) -> np.ndarray:
    """The fold of each of the member's OOF images (its folds file), in the OOF's order."""
    return member_folds(member)["fold"].to_numpy()


def member_folds(member: ExperimentOOF) -> pd.DataFrame:
    """The member's folds table (img, car, fold) in the order of its OOF images."""
    table = read_folds(member.cfg.data.folds_path, open_layout(member.cfg.data), member.cfg.data.folds).set_index("img")
    return table.loc[[str(i) for i in member.oof.ids]]


def image_cars(ids: np.ndarray) -> np.ndarray:
    """The car of each Carvana image id (`<car>_<NN>`)."""
    return np.array([split_id(str(i))[0] for i in ids])


def oof_groups(member: ExperimentOOF) -> np.ndarray:
    """The group of each of the member's OOF images (its car, or what `data.groups` made it, as
    the folds file records it): what the intervals over cars resample."""
    return member_folds(member)["car"].to_numpy(dtype=str)


class Candidates:
    """Per-image scores, on every OOF image, of each candidate a tuning tries: a blend's Dice
    by level at training resolution (the weight search), a recipe's level histograms at
    original size, and its Dice under each post-processing subset. Each is computed once, on
    first use; a tuning restricted to some images selects on their rows only."""

    def __init__(self, members: list[ExperimentOOF], runs_dir: str | Path, tta: str, device: torch.device):
        self.members, self.runs_dir, self.tta, self.device = members, runs_dir, tta, device
        self.layout = open_layout(members[0].cfg.data)
        self.folds, self.cars = image_folds(members[0]), oof_groups(members[0])
        self._blends: dict[tuple[float, ...], np.ndarray] = {}
        self._histograms: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._postprocess: dict[tuple, dict[tuple[str, ...], np.ndarray]] = {}
        self._training_size: tuple | None = None

    @property
    def count(self) -> int:
        return len(self.members[0].oof.ids)

    def blend_dice(self, weights: list[float]) -> np.ndarray:
        """(images, 256) Dice by level of the blend with `weights`, at the first member's
        training resolution against masks resized to it (fast, for the weight search)."""
        key = tuple(weights)
        if key not in self._blends:
            if self._training_size is None:
                size = self.members[0].oof.probs.shape[1:]
                ids = tqdm(self.members[0].oof.ids, desc="masks", leave=False, disable=None)
                masks = torch.from_numpy(np.stack([resize_mask(self.layout.read_mask(str(i)), size) for i in ids])).to(self.device)
                self._training_size = (size, member_maps(self.members, np.arange(self.count), self.device), masks)
            size, maps, masks = self._training_size
            self._blends[key] = dice_by_level(*(h.cpu().numpy() for h in batch_level_histograms(quantize(blend(maps, weights, size)), masks)))
        return self._blends[key]

    def histograms(self, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
        """(positive, negative) level histograms at original size of the recipe before its threshold."""
        key = (tuple(recipe.weights), recipe.refine)
        if key not in self._histograms:
            if len(self.members) == 1 and recipe.refine is None:  # the member's own, cached on disk
                self._histograms[key] = member_histograms(self.members[0], self.tta, self.device)
            else:
                self._histograms[key] = recipe_histograms(recipe, self.members, self.layout, self.device)
        return self._histograms[key]

    def postprocessed(self, recipe: Recipe) -> dict[tuple[str, ...], np.ndarray]:
        """Per-image Dice of the recipe's masks under each post-processing subset."""
        key = (tuple(recipe.weights), recipe.refine, recipe.threshold_level)
        if key not in self._postprocess:
            self._postprocess[key] = postprocess_scores(recipe, self.members, self.layout, self.device)
        return self._postprocess[key]


def search_weights(candidates: Candidates, images: np.ndarray) -> list[float]:
    """Coordinate ascent on blend weights, scored on `images` at the first member's resolution."""
    members = len(candidates.members)
    if members == 1:
        return [1.0]

    def score(weights: list[float]) -> float:
        return float(candidates.blend_dice(weights)[images].mean(axis=0).max())

    weights = [1.0] * members
    best = score(weights)
    for _ in range(ASCENT_ROUNDS):
        for m in range(members):
            for candidate in WEIGHT_CANDIDATES:
                trial = weights[:m] + [candidate] + weights[m + 1 :]
                if sum(trial) == 0 or trial == weights:
                    continue
                value = score(trial)
                if value > best + 1e-7:
                    best, weights = value, trial
    total = sum(weights)
    return [w / total for w in weights]


def blend_weights(candidates: Candidates, images: np.ndarray, rule: str) -> list[float]:
    """The members' weights under `rule` (recipe/nested.py BLEND_RULES), chosen on `images`."""
    count = len(candidates.members)
    if rule == "equal":
        return [1.0 / count] * count
    searched = search_weights(candidates, images)
    if rule == "shrink":
        return [(1 - SHRINKAGE) * w + SHRINKAGE / count for w in searched]
    return searched


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


def choose_refinement(recipe: Recipe, candidates: Candidates, images: np.ndarray, scores: dict) -> tuple[Recipe, dict]:
    """Try each guided-filter setting on `images` (threshold tuned again for each); keep the best
    only if it beats no refinement by more than MIN_GAIN. Returns the recipe with its setting and threshold, and its scores."""
    best, best_scores = recipe, scores
    tried = {recipe.replace(refine=None).refine_label(): scores["dice_at_threshold"]}
    for refine in REFINE_CANDIDATES:
        positive, negative = candidates.histograms(recipe.replace(refine=refine))
        candidate, candidate_scores = with_best_threshold(recipe.replace(refine=refine), positive[images], negative[images])
        tried[refine.label()] = candidate_scores["dice_at_threshold"]
        if candidate_scores["dice_at_threshold"] > max(best_scores["dice_at_threshold"], scores["dice_at_threshold"] + MIN_GAIN):
            best, best_scores = candidate, candidate_scores
    return best, dict(best_scores, refine_tried=tried)


def tune_on(candidates: Candidates, draft: Recipe, images: np.ndarray, rule: str) -> tuple[Recipe, dict, dict[tuple[str, ...], np.ndarray]]:
    """The whole tuning (blend weights, threshold, edge refinement, post-processing), every
    choice made on the OOF images `images` only. Returns the tuned recipe, its scores on
    `images`, and each post-processing subset's per-image Dice on every image."""
    weights = blend_weights(candidates, images, rule)
    recipe = draft.replace(members=tuple(dataclasses.replace(m, weight=float(w)) for m, w in zip(draft.members, weights)))
    positive, negative = candidates.histograms(recipe)
    recipe, scores = with_best_threshold(recipe, positive[images], negative[images])
    recipe, scores = choose_refinement(recipe, candidates, images, scores)
    by_subset = candidates.postprocessed(recipe)
    steps = kept_postprocess({s: v[images] for s, v in by_subset.items()})
    scores.update(
        rule=rule,
        postprocess={" + ".join(s) or "none": float(v[images].mean()) for s, v in by_subset.items()},
        dice_final=float(by_subset[steps][images].mean()),
    )
    return recipe.replace(postprocess=steps), scores, by_subset


def nested_tuning(candidates: Candidates, draft: Recipe, rule: str, in_sample: float) -> tuple[NestedCV, np.ndarray]:
    """For each fold, `tune_on` the other folds' images and score its choice on the fold:
    the nested CV (mean over every image, 95% interval over cars) and its per-image Dice."""
    per_image = np.full(candidates.count, np.nan)
    folds = []
    for fold in np.unique(candidates.folds):
        held_out = candidates.folds == fold
        recipe, scores, by_subset = tune_on(candidates, draft, np.flatnonzero(~held_out), rule)
        per_image[held_out] = by_subset[recipe.postprocess][held_out]
        folds.append(FoldTuning(
            int(fold), int(held_out.sum()), tuple(recipe.weights), recipe.threshold_level, recipe.refine_label(),
            recipe.postprocess, scores["dice_final"], float(per_image[held_out].mean()),
        ))
    mean, low, high = paired_bootstrap(per_image, groups=candidates.cars)
    return NestedCV(rule, in_sample, mean, low, high, candidates.count, len(set(candidates.cars)), tuple(folds)), per_image


def load_candidates(exps: list[str], runs_dir: str | Path, tta: str) -> Candidates:
    """The experiments' OOF (under `tta`), checked to cover the same images of the same data."""
    members = [load_member(exp, runs_dir, tta) for exp in exps]
    reference = members[0]
    for member in members[1:]:
        if member.cfg.data.root != reference.cfg.data.root or not np.array_equal(member.oof.ids, reference.oof.ids):
            raise PipelineError(f"experiments {reference.exp!r} and {member.exp!r} were trained on different data; they cannot be blended")
    return Candidates(members, runs_dir, tta, default_device())


def tuned_recipe(candidates: Candidates, name: str, blend_rule: str = DEFAULT_BLEND_RULE, nested: bool = True) -> tuple[Recipe, pd.DataFrame | None]:
    """Tune on all the candidates' OOF, then (when `nested`) the nested CV of that tuning.
    Returns the recipe and, with the nested CV, each image's in-sample and nested Dice."""
    if blend_rule == AUTO:
        return best_rule_recipe(candidates, name)
    start = time.perf_counter()
    member_cv = {m.exp: threshold_scores(*member_histograms(m, candidates.tta, candidates.device)) for m in candidates.members}
    draft = draft_recipe(candidates.members, [1.0] * len(candidates.members), candidates.runs_dir, candidates.tta, name)
    recipe, blend_cv, by_subset = tune_on(candidates, draft, np.arange(candidates.count), blend_rule)
    tuned = time.perf_counter()
    nested_cv, per_image = nested_tuning(candidates, draft, blend_rule, blend_cv["dice_final"]) if nested else (None, None)
    seconds = {"tuning": round(tuned - start, 2), "nested": round(time.perf_counter() - tuned, 2)}
    recipe = recipe.replace(cv={"blend": blend_cv, "members": member_cv, "images": candidates.count, "seconds": seconds}, nested_cv=nested_cv)
    if not nested:
        return recipe, None
    ids = candidates.members[0].oof.ids.astype(str)
    in_sample = by_subset[recipe.postprocess]
    scores = pd.DataFrame({"img": ids, "car": candidates.cars, "fold": candidates.folds, "dice_in_sample": in_sample, "dice_nested": per_image})
    return recipe, scores


def best_rule_recipe(candidates: Candidates, name: str) -> tuple[Recipe, pd.DataFrame]:
    """`tuned_recipe` under each blend rule (one for a single member: they agree), keeping the
    one with the best nested CV; every rule's in-sample and nested CV go to cv["blend_rules"].
    The kept rule's nested CV is the best of the rules', so it leans slightly optimistic."""
    rules = list(BLEND_RULES) if len(candidates.members) > 1 else [next(iter(BLEND_RULES))]
    tuned = {rule: tuned_recipe(candidates, name, rule) for rule in rules}
    best = max(rules, key=lambda rule: tuned[rule][0].nested_cv.mean)  # the first on a tie
    compared = {rule: {"in_sample": r.nested_cv.in_sample, "nested": r.nested_cv.mean} for rule, (r, _) in tuned.items()}
    seconds = {key: round(sum(r.cv["seconds"][key] for r, _ in tuned.values()), 2) for key in ("tuning", "nested")}
    recipe, scores = tuned[best]
    return recipe.replace(cv=dict(recipe.cv, blend_rules=compared, seconds=seconds)), scores


def save_recipe(recipe: Recipe, scores: pd.DataFrame | None, out_dir: str | Path) -> Path:
    """Write `<out_dir>/<name>.recipe.json` and, beside it, the per-image scores (`per_image_path`)."""
    path = Path(out_dir) / f"{recipe.name}.recipe.json"
    if scores is not None:
        with atomic_path(per_image_path(path)) as tmp:
            scores.to_csv(tmp, index=False)
    recipe.save(path)
    return path


def tune(
    exps: list[str], runs_dir: str | Path = "runs", tta: str = "none", name: str | None = None, out_dir: str | Path = "submissions",
    blend_rule: str = DEFAULT_BLEND_RULE, nested: bool = True,
) -> Recipe:
    """Tune on all OOF, then (unless `nested` is false) the nested CV of that tuning; write
    `submissions/<name>.recipe.json` and return the recipe."""
    if name is not None:
        check_plain_name(name, "--name")  # before the long work, not after it
    if blend_rule not in BLEND_CHOICES:
        raise PipelineError(f"blend rule {blend_rule!r}: choose one of {', '.join(BLEND_CHOICES)}")
    if blend_rule == AUTO and not nested:
        raise PipelineError(f"blend rule {AUTO!r} chooses by the nested CV: tune with it, or name a rule ({', '.join(BLEND_RULES)})")
    keep_freed_memory()
    start = time.perf_counter()
    candidates = load_candidates(exps, runs_dir, tta)
    loaded = round(time.perf_counter() - start, 2)
    recipe, scores = tuned_recipe(candidates, name or "_".join(exps) + ("" if tta_label(tta) == "none" else f"_tta-{tta_label(tta)}"), blend_rule, nested)
    recipe = recipe.replace(cv=dict(recipe.cv, seconds=dict(recipe.cv["seconds"], loading=loaded)))
    save_recipe(recipe, scores, out_dir)
    return recipe


def per_image_path(recipe_path: str | Path) -> Path:
    """`<name>.nested.csv` beside `<name>.recipe.json`: each OOF image's in-sample and nested Dice."""
    recipe_path = Path(recipe_path)
    return recipe_path.with_name(recipe_path.name.removesuffix(".recipe.json") + ".nested.csv")
