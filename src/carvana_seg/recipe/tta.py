"""The recipe's TTA text: `hflip,scale0.75` names the views predicted besides the identity
(`none`, `hflip`, `scale<factor>`); `models/tta.py` predicts them."""

from __future__ import annotations

import re

from carvana_seg.config import ConfigError

SCALE_VIEW = re.compile(r"^scale(\d+(?:\.\d+)?)$")  # a view name `scale<factor>`

# A scale view resizes the network's input by this factor: below 0.25 a car is a few cells of
# the deepest stage, above 2 the view costs more than 4x the identity's work.
MIN_SCALE, MAX_SCALE = 0.25, 2.0


def parse_tta(spec: str) -> list[str]:
    """`hflip,scale0.75` -> ['identity', 'hflip', 'scale0.75'] (checked)."""
    views = ["identity"]
    for view in filter(None, (v.strip() for v in spec.split(","))):
        if view == "none":
            continue
        if view != "hflip" and not SCALE_VIEW.match(view):
            raise ConfigError(f"TTA view {view!r}: use none, hflip or scale<factor> (e.g. scale0.75)")
        if view != "hflip":
            check_scale(view)
        if view not in views:
            views.append(view)
    return views


def check_scale(view: str) -> None:
    """A scale view's factor must be in MIN_SCALE..MAX_SCALE and not 1 (the identity, always predicted)."""
    factor = float(SCALE_VIEW.match(view)[1])
    if not MIN_SCALE <= factor <= MAX_SCALE or factor == 1:
        raise ConfigError(f"TTA view {view!r}: the scale factor must be in {MIN_SCALE:g}..{MAX_SCALE:g} and not 1 (the identity is always predicted)")
