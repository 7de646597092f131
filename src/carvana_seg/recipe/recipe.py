"""The recipe `tune.py` writes and `predict.py` follows: which models, blended how, and the
steps from their probability maps to a submitted mask. Frozen and checked on load, so a
recipe that loads is one the chain can apply.

`submissions/<name>.recipe.json` keeps readable top-level keys:

    {"format": 2, "name": ..., "members": [{"exp", "runs_dir", "weight", "folds"}],
     "tta": "hflip", "threshold": 0.52, "threshold_level": 133,
     "refine": {"radius": 8, "eps": 0.0003} | null, "postprocess": ["largest_component"],
     "data_root": ..., "cv": {...what tuning measured...}}
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from carvana_seg.config import ConfigError
from carvana_seg.core.experiment import experiment_config
from carvana_seg.core.views import parse_tta
from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_write_text
from carvana_seg.names import check_plain_name
from carvana_seg.recipe.postprocess import POSTPROCESS

FORMAT = 2  # 2: typed recipe (1: the untyped dict before it, without a "format" key)
KEYS = ("format", "name", "members", "tta", "threshold", "threshold_level", "refine", "postprocess", "data_root", "cv")


class RecipeError(PipelineError):
    """A recipe file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Member:
    """One experiment of the blend: its fold models are averaged, then weighted."""

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
        }

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe {path} not found: write one with scripts/tune.py")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RecipeError(f"recipe {path} is not JSON: {err}") from None
        recipe = cls.from_json(raw, str(path))
        for member in recipe.members:  # a missing run is named now, not after the test set is half read
            experiment_config(member.exp, member.runs_dir)
        return recipe

    @classmethod
    def from_json(cls, raw: dict, source: str = "recipe") -> Recipe:
        """Check every field; the first bad one is an error that names it."""
        def bad(key: str, why: str) -> RecipeError:
            return RecipeError(f"{source}: {key}: {why}")

        if not isinstance(raw, dict):
            raise RecipeError(f"{source}: expected a JSON object")
        if raw.get("format") != FORMAT:
            raise bad("format", f"{raw.get('format')!r} is not format {FORMAT} (written by an older version?): run scripts/tune.py again")
        unknown = sorted(set(raw) - set(KEYS))
        if unknown:
            raise bad(unknown[0], f"unknown key (known: {', '.join(KEYS)})")
        missing = [k for k in KEYS if k not in raw]
        if missing:
            raise bad(missing[0], "missing")
        try:
            check_plain_name(raw["name"], "name")  # it names submissions/<name>.csv
        except PipelineError as err:
            raise RecipeError(f"{source}: {err}") from None
        members = raw["members"]
        if not isinstance(members, list) or not members:
            raise bad("members", "must be a non-empty list")
        parsed = []
        for k, entry in enumerate(members):
            if not isinstance(entry, dict) or set(entry) != {"exp", "runs_dir", "weight", "folds"}:
                raise bad(f"members[{k}]", "must have exactly the keys exp, runs_dir, weight, folds")
            weight = entry["weight"]
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
                raise bad(f"members[{k}].weight", f"{weight!r} is not a finite weight >= 0")
            if not isinstance(entry["folds"], int) or entry["folds"] < 1:
                raise bad(f"members[{k}].folds", f"{entry['folds']!r} is not a fold count >= 1")
            if not isinstance(entry["exp"], str) or not isinstance(entry["runs_dir"], str):
                raise bad(f"members[{k}]", "exp and runs_dir must be strings")
            parsed.append(Member(entry["exp"], entry["runs_dir"], float(weight), entry["folds"]))
        if sum(m.weight for m in parsed) <= 0:
            raise bad("members", "the weights add up to 0: no member would count")
        try:
            parse_tta(raw["tta"] if isinstance(raw["tta"], str) else "")
        except ConfigError as err:
            raise bad("tta", str(err)) from None
        level = raw["threshold_level"]
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 255:
            raise bad("threshold_level", f"{level!r} is not a level in 0..255")
        if not isinstance(raw["threshold"], (int, float)) or abs(raw["threshold"] - level / 255) > 1e-6:
            raise bad("threshold", f"{raw['threshold']!r} does not match threshold_level {level} (= {level / 255:.6f})")
        refine = raw["refine"]
        if refine is not None:
            if not isinstance(refine, dict) or set(refine) != {"radius", "eps"}:
                raise bad("refine", "must be null or {\"radius\": int, \"eps\": float}")
            if not isinstance(refine["radius"], int) or refine["radius"] < 1 or not isinstance(refine["eps"], (int, float)) or not refine["eps"] > 0:
                raise bad("refine", f"radius must be an integer >= 1 and eps > 0, got {refine}")
            refine = Refine(refine["radius"], float(refine["eps"]))
        steps = raw["postprocess"]
        if not isinstance(steps, list) or any(step not in POSTPROCESS for step in steps):
            raise bad("postprocess", f"{steps!r}: each step must be one of {', '.join(POSTPROCESS)}")
        if not isinstance(raw["data_root"], str):
            raise bad("data_root", "must be a string")
        return cls(raw["name"], tuple(parsed), raw["data_root"], raw["tta"], level, refine, tuple(steps), raw["cv"] if isinstance(raw["cv"], dict) else {})
