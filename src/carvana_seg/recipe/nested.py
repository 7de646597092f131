"""The recipe's nested CV: what the whole tuning scores on images it never saw.

For each fold k, tuning (blend weights, threshold, edge refinement, post-processing) runs on
the other folds' OOF only, and its choice is scored on fold k. The mean over every image is
the nested CV: an estimate of what the tuning procedure scores on new cars, where the
recipe's in-sample CV (tuned and scored on the same OOF) rewards choices that fit noise.
How far the folds' choices move says whether those choices are real.

Stored in `<name>.recipe.json` under "nested_cv" (null for a recipe tuned without it):

    {"blend_rule": "search", "in_sample": ..., "mean": ..., "low": ..., "high": ...,
     "images": ..., "cars": ...,
     "folds": [{"fold": 0, "images": ..., "weights": [...], "threshold_level": ...,
                "refine": "none", "postprocess": ["largest_component"],
                "tuned_cv": ..., "held_out_cv": ...}, ...]}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from carvana_seg.recipe.postprocess import POSTPROCESS

# How blend weights are chosen on OOF (tune.blend_weights); the nested CV is that of the rule used
# (tune's "auto" tries each and keeps the best nested CV).
BLEND_RULES = {
    "search": "coordinate ascent on OOF Dice",
    "shrink": "the searched weights moved halfway toward equal weights",
    "equal": "equal weights, nothing searched",
}
FOLD_KEYS = ("fold", "images", "weights", "threshold_level", "refine", "postprocess", "tuned_cv", "held_out_cv")
KEYS = ("blend_rule", "in_sample", "mean", "low", "high", "images", "cars", "folds")


@dataclass(frozen=True)
class FoldTuning:
    """The tuning run without fold `fold`: what it chose, its CV on the folds it was tuned on,
    and the choice's CV on the held-out fold."""

    fold: int
    images: int  # held-out images
    weights: tuple[float, ...]
    threshold_level: int
    refine: str  # "none" or the guided filter's label (Refine.label())
    postprocess: tuple[str, ...]
    tuned_cv: float
    held_out_cv: float


@dataclass(frozen=True)
class NestedCV:
    """In-sample and nested CV of a recipe's tuning, with a 95% interval over cars."""

    blend_rule: str
    in_sample: float
    mean: float
    low: float
    high: float
    images: int
    cars: int
    folds: tuple[FoldTuning, ...]

    @property
    def optimism(self) -> float:
        """How much the in-sample CV exceeds the nested one."""
        return self.in_sample - self.mean

    def movement(self) -> str:
        """How far the folds' choices move: the widest weight range, the threshold levels'
        range, and how many different refinements and post-processing sets were chosen."""
        weights = list(zip(*(f.weights for f in self.folds)))
        widest = max(max(w) - min(w) for w in weights)
        levels = [f.threshold_level for f in self.folds]
        refines = {f.refine for f in self.folds}
        steps = {f.postprocess for f in self.folds}
        thresholds = f"threshold level {levels[0]} in every fold" if len(set(levels)) == 1 else f"threshold levels {min(levels)}..{max(levels)}"
        return (
            f"weights move by up to {widest:.2f}, {thresholds}, "
            f"{len(refines)} edge refinement{'s' * (len(refines) > 1)}, {len(steps)} post-processing set{'s' * (len(steps) > 1)}"
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object, members: int) -> NestedCV:
        """Check every field (a recipe of `members` members); raises ValueError naming the first bad one."""
        _keys(raw, KEYS, "")
        if raw["blend_rule"] not in BLEND_RULES:
            raise ValueError(f"blend_rule: {raw['blend_rule']!r} is not one of {', '.join(BLEND_RULES)}")
        for key in ("in_sample", "mean", "low", "high"):
            _dice(raw[key], key)
        for key in ("images", "cars"):
            _count(raw[key], key)
        if not isinstance(raw["folds"], list) or len(raw["folds"]) < 2:
            raise ValueError(f"folds: {raw['folds']!r} is not a list of 2 or more folds")
        folds = tuple(_fold(entry, f"folds[{k}]", members) for k, entry in enumerate(raw["folds"]))
        return cls(raw["blend_rule"], *(float(raw[k]) for k in ("in_sample", "mean", "low", "high")), raw["images"], raw["cars"], folds)


def _keys(raw: object, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(raw, dict) or set(raw) != set(keys):
        raise ValueError(f"{where or 'nested_cv'}: must be an object with exactly the keys {', '.join(keys)}")


def _dice(value: object, key: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{key}: {value!r} is not a Dice score in 0..1")


def _count(value: object, key: str, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{key}: {value!r} is not an integer >= {low}")


def _fold(raw: object, where: str, members: int) -> FoldTuning:
    _keys(raw, FOLD_KEYS, where)
    _count(raw["fold"], f"{where}.fold", 0)
    _count(raw["images"], f"{where}.images")
    weights = raw["weights"]
    numbers = isinstance(weights, list) and all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights)
    if not numbers or len(weights) != members:
        raise ValueError(f"{where}.weights: {weights!r} is not a list of {members} weights >= 0 (one per member)")
    level = raw["threshold_level"]
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 255:
        raise ValueError(f"{where}.threshold_level: {level!r} is not an integer level in 0..255")
    if not isinstance(raw["refine"], str) or not raw["refine"]:
        raise ValueError(f"{where}.refine: {raw['refine']!r} is not a label (\"none\" or a guided filter's)")
    steps = raw["postprocess"]
    if not isinstance(steps, list) or not all(isinstance(s, str) and s in POSTPROCESS for s in steps):
        raise ValueError(f"{where}.postprocess: {steps!r} is not a list of steps, each one of {', '.join(POSTPROCESS)}")
    for key in ("tuned_cv", "held_out_cv"):
        _dice(raw[key], f"{where}.{key}")
    return FoldTuning(
        raw["fold"], raw["images"], tuple(float(w) for w in weights), level, raw["refine"], tuple(steps), float(raw["tuned_cv"]), float(raw["held_out_cv"])
    )
