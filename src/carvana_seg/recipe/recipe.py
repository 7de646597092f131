"""The recipe `tune.py` writes and `predict.py` follows: which models, blended how, and the
steps from their probability maps to a submitted mask. Frozen and checked on load, so a
recipe that loads is one the chain can apply.

`submissions/<name>.recipe.json` keeps readable top-level keys:

    {"format": 2, "name": ..., "members": [{"exp", "runs_dir", "weight", "folds"}],
     "tta": "hflip", "threshold": 0.52, "threshold_level": 133,
     "refine": {"radius": 8, "eps": 0.0003} | null, "postprocess": ["largest_component"],
     "data_root": ..., "cv": {...what tuning measured...},
     "nested_cv": {...the tuning's CV on images it never saw (recipe/nested.py)...} | null}
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from carvana_seg.config import ConfigError
from carvana_seg.recipe.tta import parse_tta
from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_write_text
from carvana_seg.names import check_plain_name
from carvana_seg.recipe.nested import NestedCV
from carvana_seg.recipe.postprocess import POSTPROCESS

FORMAT = 2  # 2: typed recipe (1: the untyped dict before it, without a "format" key)
KEYS = ("format", "name", "members", "tta", "threshold", "threshold_level", "refine", "postprocess", "data_root", "cv", "nested_cv")
OPTIONAL_KEYS = ("nested_cv",)  # absent from recipes tuned before the nested CV; they load without it
MEMBER_KEYS = ("exp", "runs_dir", "weight", "folds")
MAX_WEIGHT = 1000.0  # blend weights are relative (tune writes ones that add up to 1); bounded so their sum stays finite
MAX_RADIUS = 64  # guided-filter window radius in full-resolution pixels (tune tries 4 and 8)
MAX_EPS = 1.0  # guided-filter regularisation: the 0-1 grey guide's variance is at most 0.25, so a larger eps only keeps the map


class RecipeError(PipelineError):
    """A recipe file is malformed; the message names the file and the field."""


def _bad(source: str, key: str, why: str) -> RecipeError:
    return RecipeError(f"{source}: {key}: {why}")


def _is_integer(value: object, low: int, high: int | None = None) -> bool:
    """An int in low..high; not a bool (JSON's true would count as 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)


def _is_number(value: object, low: float, high: float) -> bool:
    """A finite int or float in low..high; not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and low <= value <= high


@dataclass(frozen=True)
class Member:
    """One experiment of the blend: its fold models are averaged, then weighted. A description
    only (no run is read): tuning works on the experiment's OOF (store/oof.ExperimentOOF),
    prediction on its loaded fold networks (inference/submit.LoadedMember)."""

    exp: str
    runs_dir: str
    weight: float
    folds: int


@dataclass(frozen=True)
class Refine:
    """Guided-filter edge refinement: window radius in full-resolution pixels, regularisation."""

    radius: int
    eps: float

    def label(self) -> str:
        return f"guided r{self.radius} eps{self.eps:g}"


@dataclass(frozen=True)
class Recipe:
    name: str
    members: tuple[Member, ...]
    data_root: str
    tta: str = "none"
    threshold_level: int = 128  # a pixel is car when its level (round(p * 255)) is >= this
    refine: Refine | None = None
    postprocess: tuple[str, ...] = ()
    cv: dict = field(default_factory=dict, compare=False)  # what tuning measured (informative)
    nested_cv: NestedCV | None = field(default=None, compare=False)  # the tuning's CV on images it never saw (recipe/nested.py)

    @property
    def threshold(self) -> float:
        return self.threshold_level / 255

    @property
    def views(self) -> list[str]:
        return parse_tta(self.tta)

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.members]

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)

    @classmethod
    def single(cls, exp: str, runs_dir: str, folds: int, data_root: str, tta: str = "none") -> Recipe:
        """One experiment alone, untuned: weight 1, threshold 0.5, no refinement or post-processing.
        A trained fold is scored by it (training/trainer.score_fold), so a fold's score and
        tuning's come from the same chain (recipe/chain.py)."""
        return cls(exp, (Member(exp, str(runs_dir), 1.0, folds),), str(data_root), tta)

    def refine_label(self) -> str:
        return self.refine.label() if self.refine else "none"

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "name": self.name,
            "members": [dataclasses.asdict(m) for m in self.members],
            "tta": self.tta,
            "threshold": self.threshold,
            "threshold_level": self.threshold_level,
            "refine": dataclasses.asdict(self.refine) if self.refine else None,
            "postprocess": list(self.postprocess),
            "data_root": self.data_root,
            "cv": self.cv,
            "nested_cv": self.nested_cv.to_json() if self.nested_cv else None,
        }

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """The recipe at `path`, checked field by field (types and ranges). Its members' runs
        are the experiment store's question (store/experiment.member_configs), asked by the
        commands that read them: a recipe file can be read, and ranked, without its runs."""
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe {path} not found: write one with scripts/tune.py")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RecipeError(f"recipe {path} is not JSON: {err}") from None
        return cls.from_json(raw, str(path))

    @classmethod
    def from_json(cls, raw: dict, source: str = "recipe") -> Recipe:
        """Check every field; the first bad one is an error that names it."""
        def bad(key: str, why: str) -> RecipeError:
            return _bad(source, key, why)

        if not isinstance(raw, dict):
            raise RecipeError(f"{source}: expected a JSON object")
        if raw.get("format") != FORMAT:
            raise bad("format", f"{raw.get('format')!r} is not format {FORMAT} (written by an older version?): run scripts/tune.py again")
        unknown = sorted(set(raw) - set(KEYS))
        if unknown:
            raise bad(unknown[0], f"unknown key (known: {', '.join(KEYS)})")
        missing = [k for k in KEYS if k not in raw and k not in OPTIONAL_KEYS]
        if missing:
            raise bad(missing[0], "missing")
        try:
            check_plain_name(raw["name"], "name")  # it names submissions/<name>.csv
        except PipelineError as err:
            raise RecipeError(f"{source}: {err}") from None
        members = raw["members"]
        if not isinstance(members, list) or not members:
            raise bad("members", "must be a non-empty list")
        parsed = [_member(entry, k, source) for k, entry in enumerate(members)]
        if sum(m.weight for m in parsed) <= 0:
            raise bad("members", "the weights add up to 0: no member would count")
        tta = raw["tta"]
        if not isinstance(tta, str):
            raise bad("tta", f"{tta!r} is not a text of views such as \"hflip\" or \"hflip,scale0.75\" (none, hflip, scale<factor>)")
        try:
            parse_tta(tta)
        except ConfigError as err:
            raise bad("tta", str(err)) from None
        level = raw["threshold_level"]
        if not _is_integer(level, 0, 255):
            raise bad("threshold_level", f"{level!r} is not an integer level in 0..255")
        if not _is_number(raw["threshold"], 0, 1):
            raise bad("threshold", f"{raw['threshold']!r} is not a number in 0..1")
        if abs(raw["threshold"] - level / 255) > 1e-6:
            raise bad("threshold", f"{raw['threshold']!r} does not match threshold_level {level} (= {level / 255:.6f})")
        refine = _refine(raw["refine"], source)
        steps = raw["postprocess"]
        if not isinstance(steps, list) or not all(isinstance(step, str) and step in POSTPROCESS for step in steps) or len(set(steps)) != len(steps):
            raise bad("postprocess", f"{steps!r}: a list of distinct steps, each one of {', '.join(POSTPROCESS)}")
        if not isinstance(raw["data_root"], str) or not raw["data_root"]:
            raise bad("data_root", f"{raw['data_root']!r} is not a folder: a non-empty string")
        if not isinstance(raw["cv"], dict):
            raise bad("cv", f"{raw['cv']!r} is not an object (what tuning measured)")
        try:
            nested = None if raw.get("nested_cv") is None else NestedCV.from_json(raw["nested_cv"], len(parsed))
        except ValueError as err:
            raise bad("nested_cv", str(err)) from None
        return cls(raw["name"], tuple(parsed), raw["data_root"], tta, level, refine, tuple(steps), raw["cv"], nested)


def _member(entry: object, k: int, source: str) -> Member:
    """`members[k]` of a recipe, each field checked by type and range."""
    key = f"members[{k}]"
    if not isinstance(entry, dict) or set(entry) != set(MEMBER_KEYS):
        raise _bad(source, key, f"must have exactly the keys {', '.join(MEMBER_KEYS)}")
    try:
        check_plain_name(entry["exp"], f"{key}.exp")  # it names <runs_dir>/<exp>
    except PipelineError as err:
        raise RecipeError(f"{source}: {err}") from None
    if not isinstance(entry["runs_dir"], str) or not entry["runs_dir"]:
        raise _bad(source, f"{key}.runs_dir", f"{entry['runs_dir']!r} is not a folder: a non-empty string")
    if not _is_number(entry["weight"], 0, MAX_WEIGHT):
        raise _bad(source, f"{key}.weight", f"{entry['weight']!r} is not a blend weight: a number in 0..{MAX_WEIGHT:g}")
    if not _is_integer(entry["folds"], 1):
        raise _bad(source, f"{key}.folds", f"{entry['folds']!r} is not a fold count: an integer >= 1")
    return Member(entry["exp"], entry["runs_dir"], float(entry["weight"]), entry["folds"])


def _refine(refine: object, source: str) -> Refine | None:
    """The recipe's `refine`: null, or a radius and eps in their ranges."""
    if refine is None:
        return None
    if not isinstance(refine, dict) or set(refine) != {"radius", "eps"}:
        raise _bad(source, "refine", "must be null or {\"radius\": int, \"eps\": float}")
    if not _is_integer(refine["radius"], 1, MAX_RADIUS):
        raise _bad(source, "refine", f"radius {refine['radius']!r} is not an integer in 1..{MAX_RADIUS} (full-resolution pixels)")
    if not _is_number(refine["eps"], 0, MAX_EPS) or refine["eps"] == 0:
        raise _bad(source, "refine", f"eps {refine['eps']!r} is not a number in (0, {MAX_EPS:g}] (on the 0-1 grey scale)")
    return Refine(refine["radius"], float(refine["eps"]))
