"""The cars: body kinds and paints, a random `CarSpec` per car and its 3-D model.

A car is a body, a cabin, four wheels, two mirrors and an optional whip antenna, each a
convex solid whose faces carry decals (lights, grille, glass, door seams, rims).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from carvana_seg.data.synthetic.geometry import (
    RGB,
    Decal,
    Part,
    Plane,
    Solid,
    clip_all,
    convex_solid,
    on_plane,
    plan_plane,
    plane_square,
    profile_plane,
    rect,
    section_plane,
)

# --- Details (metres) -----------------------------------------------------------------------
WHEEL_SEGMENTS = 20
SPOKES = 5
SHOULDER = (0.07, 0.12)  # bevel along the body's top side edge: (inwards, downwards) metres
ROCKER = (0.05, 0.09)  # bevel along the bottom side edge
GLASS_RIM = (0.085, 0.065)  # paint left around the windshield/backlight and the side glass, metres

# (name, RGB, weight): white and silver are frequent, as on the real lot, and hard on a white wall.
PAINTS = (
    ("white", (236, 236, 233), 0.18), ("silver", (188, 191, 195), 0.15), ("black", (22, 22, 25), 0.17),
    ("grey", (105, 108, 113), 0.10), ("red", (150, 18, 24), 0.09), ("blue", (26, 46, 112), 0.09),
    ("light blue", (95, 125, 165), 0.03), ("green", (28, 72, 46), 0.04), ("beige", (182, 166, 135), 0.04),
    ("orange", (205, 92, 22), 0.03), ("brown", (82, 52, 36), 0.03), ("yellow", (212, 182, 42), 0.02),
    ("dark red", (92, 16, 22), 0.03),
)
PAINT_RGB = {name: rgb for name, rgb, _ in PAINTS}
PAINT_JITTER = 8
CONTRAST_ROOF_P = 0.10  # a black roof on a light car, a white one on a dark car
MIRROR_IN_PAINT_P = 0.75  # otherwise black plastic
ANTENNA_P = 0.45
GLASS = (28, 33, 40)
TYRE = (24, 24, 26)
TRIM = (30, 30, 33)  # grilles, wheel wells, intakes, antenna
RIMS = ((178, 181, 186), (142, 145, 150), (52, 53, 58))
RIM_P = (0.55, 0.25, 0.20)
HEADLIGHT = (214, 219, 224)
TAILLIGHT = (168, 24, 30)
PLATE = (232, 234, 238)

# Body proportions per kind, (low, high): metres, except hood and trunk (fractions of the length)
# and windshield/backlight (horizontal run of the glass, metres).
KINDS = {
    "sedan": dict(weight=0.35, length=(4.5, 5.1), width=(1.76, 1.92), roof=(1.38, 1.50), belt=(0.86, 0.98),
                  clearance=(0.13, 0.18), hood=(0.27, 0.33), trunk=(0.17, 0.23), wheel=(0.31, 0.35),
                  windshield=(0.75, 0.95), backlight=(0.55, 0.80)),
    "coupe": dict(weight=0.10, length=(4.2, 4.8), width=(1.78, 1.95), roof=(1.28, 1.38), belt=(0.82, 0.92),
                  clearance=(0.11, 0.15), hood=(0.30, 0.36), trunk=(0.13, 0.19), wheel=(0.32, 0.36),
                  windshield=(0.85, 1.05), backlight=(0.75, 1.00)),
    "hatchback": dict(weight=0.15, length=(3.8, 4.4), width=(1.70, 1.82), roof=(1.42, 1.56), belt=(0.88, 0.98),
                      clearance=(0.13, 0.17), hood=(0.22, 0.27), trunk=(0.01, 0.03), wheel=(0.30, 0.33),
                      windshield=(0.70, 0.90), backlight=(0.25, 0.40)),
    "suv": dict(weight=0.30, length=(4.3, 5.0), width=(1.80, 1.96), roof=(1.64, 1.82), belt=(1.00, 1.12),
                clearance=(0.19, 0.25), hood=(0.24, 0.29), trunk=(0.01, 0.03), wheel=(0.35, 0.40),
                windshield=(0.65, 0.85), backlight=(0.15, 0.30)),
    "van": dict(weight=0.10, length=(4.9, 5.2), width=(1.90, 1.99), roof=(1.72, 1.80), belt=(0.96, 1.04),
                clearance=(0.14, 0.18), hood=(0.17, 0.21), trunk=(0.01, 0.02), wheel=(0.33, 0.36),
                windshield=(0.85, 1.00), backlight=(0.12, 0.22)),
}
LONG_CABIN = ("suv", "van")  # three side windows instead of two


# --- Car specification ----------------------------------------------------------------------

@dataclass(frozen=True)
class CarSpec:
    """Everything that makes one car itself in all 16 photos (metres, car frame)."""

    kind: str
    length: float
    width: float
    roof: float
    belt: float  # top of the body, where the glass starts
    clearance: float
    nose: float  # height of the front face's top, where the hood starts
    tail: float
    x_windshield: float  # windshield base
    x_roof_front: float
    x_roof_rear: float
    x_backlight: float  # rear window base
    corner_front: tuple[float, float]  # plan-view chamfer: (along x, along y)
    corner_rear: tuple[float, float]
    tumblehome: float  # the roof is this much narrower than the cabin base, per side
    wheel_radius: float
    wheel_width: float
    x_front_axle: float
    x_rear_axle: float
    paint: RGB
    roof_paint: RGB
    mirror_paint: RGB
    rim: RGB
    antenna: bool


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _pick(rng: np.random.Generator, weights: Sequence[float]) -> int:
    w = np.asarray(weights, dtype=float)
    return int(rng.choice(len(w), p=w / w.sum()))


def _jitter(rng: np.random.Generator, rgb: Sequence[int]) -> RGB:
    shifted = np.clip(np.asarray(rgb) + rng.integers(-PAINT_JITTER, PAINT_JITTER + 1, 3), 0, 255)
    return tuple(int(c) for c in shifted)


def sample_car(rng: np.random.Generator) -> CarSpec:
    """Draw a plausible car: body kind and proportions, paint, rims and optional parts."""
    kind = list(KINDS)[_pick(rng, [k["weight"] for k in KINDS.values()])]
    k = KINDS[kind]
    length, belt = uniform(rng, k["length"]), uniform(rng, k["belt"])
    x_windshield = length / 2 - uniform(rng, k["hood"]) * length
    x_backlight = -length / 2 + uniform(rng, k["trunk"]) * length
    wheel_radius = uniform(rng, k["wheel"])
    rear_overhang = rng.uniform(0.55, 0.75) if k["trunk"][1] > 0.1 else rng.uniform(0.35, 0.50)
    paint = _jitter(rng, PAINTS[_pick(rng, [p[2] for p in PAINTS])][1])
    contrast = PAINT_RGB["black"] if sum(paint) > 300 else PAINT_RGB["white"]
    return CarSpec(
        kind=kind, length=length, width=uniform(rng, k["width"]), roof=uniform(rng, k["roof"]), belt=belt,
        clearance=uniform(rng, k["clearance"]),
        nose=belt - rng.uniform(0.15, 0.28), tail=belt - rng.uniform(0.04, 0.14),
        x_windshield=x_windshield, x_roof_front=x_windshield - uniform(rng, k["windshield"]),
        x_roof_rear=x_backlight + uniform(rng, k["backlight"]), x_backlight=x_backlight,
        corner_front=(rng.uniform(0.30, 0.50), rng.uniform(0.16, 0.28)),
        corner_rear=(rng.uniform(0.15, 0.30), rng.uniform(0.10, 0.20)),
        tumblehome=rng.uniform(0.10, 0.17), wheel_radius=wheel_radius, wheel_width=rng.uniform(0.21, 0.27),
        x_front_axle=length / 2 - wheel_radius - rng.uniform(0.50, 0.65),
        x_rear_axle=-length / 2 + wheel_radius + rear_overhang,
        paint=paint, roof_paint=_jitter(rng, contrast) if rng.random() < CONTRAST_ROOF_P else paint,
        mirror_paint=paint if rng.random() < MIRROR_IN_PAINT_P else TRIM, rim=RIMS[_pick(rng, RIM_P)],
        antenna=bool(rng.random() < ANTENNA_P),
    )


# --- The 3-D car ------------------------------------------------------------------------------

def _body(spec: CarSpec) -> Solid:
    """Lower body: side profile (nose, hood, deck, trunk, tail), side bevels, chamfered corners."""
    half_l, half_w = spec.length / 2, spec.width / 2
    front, back = (half_l, spec.nose), (-half_l, spec.tail)
    nose = profile_plane((half_l - 0.06, spec.clearance), front, (1, 0))
    tail = profile_plane((-half_l + 0.05, spec.clearance), back, (-1, 0))
    parts = [
        Part(nose, spec.paint, 0.3, _front_decals(spec, nose)),
        Part(tail, spec.paint, 0.3, _rear_decals(spec, tail)),
        Part(profile_plane(front, (spec.x_windshield, spec.belt), (1, 1)), spec.paint, 1.0),  # hood
        Part(profile_plane((spec.x_backlight, spec.belt), back, (-1, 1)), spec.paint, 1.0),  # trunk
        Part(Plane.through((0, 0, spec.belt), (0, 0, 1)), spec.paint, 1.0),
        Part(Plane.through((0, 0, spec.clearance), (0, 0, -1)), TRIM),
    ]
    for side in (1, -1):
        wall = Plane.through((0, side * half_w, 0), (0, side, 0))
        top_in, low_in = side * (half_w - SHOULDER[0]), side * (half_w - ROCKER[0])
        shoulder = section_plane((side * half_w, spec.belt - SHOULDER[1]), (top_in, spec.belt), (side, 1))
        rocker = section_plane((side * half_w, spec.clearance + ROCKER[1]), (low_in, spec.clearance), (side, -1))
        parts += [Part(wall, spec.paint, 0.3, _side_decals(spec, wall)), Part(shoulder, spec.paint, 0.8)]
        parts.append(Part(rocker, TRIM))
        for end, (cx, cy) in ((1, spec.corner_front), (-1, spec.corner_rear)):
            tip, root = (end * half_l, side * (half_w - cy)), (end * (half_l - cx), side * half_w)
            corner = plan_plane(tip, root, (end, side))
            parts.append(Part(corner, spec.paint, 0.3, _corner_decals(spec, corner, end, side)))
    return convex_solid(parts)


def _front_decals(spec: CarSpec, plane: Plane) -> tuple[Decal, ...]:
    half = spec.width / 2 - spec.corner_front[1]
    light, low = (spec.nose - 0.13, spec.nose - 0.03), spec.clearance
    decals = [
        (on_plane(plane, 0, rect(-half * 0.42, half * 0.42, light[0] - 0.10, light[1])), TRIM),  # grille
        (on_plane(plane, 0, rect(-half * 0.90, half * 0.90, low + 0.02, low + 0.10)), TRIM),  # intake
        (on_plane(plane, 0, rect(-0.26, 0.26, low + 0.14, low + 0.26)), PLATE),
    ]
    decals += [(on_plane(plane, 0, rect(s * half * 0.52, s * half, *light)), HEADLIGHT) for s in (1, -1)]
    return tuple(decals)


def _rear_decals(spec: CarSpec, plane: Plane) -> tuple[Decal, ...]:
    half = spec.width / 2 - spec.corner_rear[1]
    top, low = spec.tail, spec.clearance
    decals = [
        (on_plane(plane, 0, rect(-half * 0.95, half * 0.95, low + 0.01, low + 0.08)), TRIM),  # diffuser
        (on_plane(plane, 0, rect(-0.26, 0.26, top - 0.36, top - 0.24)), PLATE),
    ]
    for s in (1, -1):
        decals.append((on_plane(plane, 0, rect(s * half * 0.62, s * half, top - 0.17, top - 0.04)), TAILLIGHT))
    return tuple(decals)


def _corner_decals(spec: CarSpec, plane: Plane, end: int, side: int) -> tuple[Decal, ...]:
    """Headlights and tail lights wrap around the chamfered corners."""
    half = spec.width / 2
    if end > 0:
        cy, z0, z1, colour = spec.corner_front[1], spec.nose - 0.13, spec.nose - 0.03, HEADLIGHT
    else:
        cy, z0, z1, colour = spec.corner_rear[1], spec.tail - 0.17, spec.tail - 0.04, TAILLIGHT
    return ((on_plane(plane, 0, rect(side * (half - cy), side * (half - cy * 0.3), z0, z1)), colour),)


def _side_decals(spec: CarSpec, plane: Plane) -> tuple[Decal, ...]:
    """Dark wheel wells, door seams and handles on a body side."""
    decals = []
    for x_axle in (spec.x_front_axle, spec.x_rear_axle):
        r = spec.wheel_radius * 1.14
        arc = [(x_axle + r * math.cos(a), spec.wheel_radius + r * math.sin(a)) for a in np.linspace(0, math.pi, 13)]
        decals.append((on_plane(plane, 1, arc), TRIM))
    seam = tuple(int(c * 0.55) for c in spec.paint)
    z0, z1 = spec.clearance + ROCKER[1] + 0.03, spec.belt - SHOULDER[1] - 0.02
    door_front = spec.x_windshield - 0.05
    door_rear = max(spec.x_rear_axle + spec.wheel_radius * 1.2, spec.x_roof_rear - 0.1)
    door_mid = (door_front + door_rear) / 2
    handle = spec.belt - SHOULDER[1] - 0.10
    for x in (door_front, door_mid, door_rear):
        decals.append((on_plane(plane, 1, rect(x - 0.006, x + 0.006, z0, z1)), seam))
        if x != door_rear:
            decals.append((on_plane(plane, 1, rect(x - 0.28, x - 0.14, handle, handle + 0.035)), seam))
    return tuple(decals)


def _cabin(spec: CarSpec) -> Solid:
    """Greenhouse: a frustum on the deck. Glass is the face shrunk inwards; the rim reads as pillars."""
    half_base = spec.width / 2 - SHOULDER[0] - 0.01
    half_top = half_base - spec.tumblehome
    windshield = profile_plane((spec.x_windshield, spec.belt), (spec.x_roof_front, spec.roof), (1, 1))
    backlight = profile_plane((spec.x_backlight, spec.belt), (spec.x_roof_rear, spec.roof), (-1, 1))
    roof = Plane.through((0, 0, spec.roof), (0, 0, 1))
    floor = Plane.through((0, 0, spec.belt - 0.02), (0, 0, -1))  # sunk into the deck: no gap
    sides = [section_plane((s * half_base, spec.belt), (s * half_top, spec.roof), (s, 0)) for s in (1, -1)]
    bounds = [windshield, backlight, roof, floor, *sides]
    parts = [
        Part(windshield, spec.paint, 1.0, (_glass(bounds, windshield, GLASS_RIM[0]),)),
        Part(backlight, spec.paint, 1.0, (_glass(bounds, backlight, GLASS_RIM[0]),)),
        Part(roof, spec.roof_paint, 1.0),
        Part(floor, spec.paint),
    ]
    panes = 3 if spec.kind in LONG_CABIN else 2
    parts += [Part(s, spec.paint, 0.6, _side_windows(_glass(bounds, s, GLASS_RIM[1])[0], panes)) for s in sides]
    return convex_solid(parts)


def _glass(bounds: Sequence[Plane], plane: Plane, rim: float) -> Decal:
    """The face on `plane` shrunk towards its centre, leaving about `rim` metres of paint around it."""
    face = clip_all(plane_square(plane), [b for b in bounds if b is not plane])
    centre = face.mean(axis=0)
    spread = np.linalg.norm(face - centre, axis=1).max()
    return centre + (face - centre) * (1.0 - rim / spread), GLASS


def _side_windows(glass: np.ndarray, panes: int) -> tuple[Decal, ...]:
    """Side glass split into panes by B (and C) pillars 8 cm wide."""
    edges = np.linspace(glass[:, 0].min(), glass[:, 0].max(), panes + 1)
    windows = []
    for i in range(panes):
        cuts = [Plane.through((edges[i] + 0.04, 0, 0), (-1, 0, 0))] if i > 0 else []
        cuts += [Plane.through((edges[i + 1] - 0.04, 0, 0), (1, 0, 0))] if i < panes - 1 else []
        pane = clip_all(glass, cuts)
        if len(pane) >= 3:
            windows.append((pane, GLASS))
    return tuple(windows)


def _wheel(spec: CarSpec, x_axle: float, side: int) -> Solid:
    """Tyre as a many-sided prism standing 1.5 cm proud of the body side; rim and spokes on its cap."""
    r = spec.wheel_radius
    y_out = side * (spec.width / 2 + 0.015)
    centre = np.array([x_axle, 0.0, r])
    parts = []
    for a in np.linspace(0, 2 * math.pi, WHEEL_SEGMENTS, endpoint=False):
        n = np.array([math.cos(a), 0.0, math.sin(a)])
        parts.append(Part(Plane.through(centre + r * n, n), TYRE))
    outer = Plane.through((0, y_out, 0), (0, side, 0))
    parts.append(Part(outer, TYRE, 0.0, _rim_decals(outer, x_axle, r, spec.rim)))
    parts.append(Part(Plane.through((0, y_out - side * spec.wheel_width, 0), (0, -side, 0)), TYRE))
    return convex_solid(parts)


def _disc(plane: Plane, x: float, z: float, radius: float, corners: int = 18) -> np.ndarray:
    angles = np.linspace(0, 2 * math.pi, corners, endpoint=False)
    return on_plane(plane, 1, [(x + radius * math.cos(a), z + radius * math.sin(a)) for a in angles])


def _rim_decals(plane: Plane, x: float, r: float, rim: RGB) -> tuple[Decal, ...]:
    decals = [(_disc(plane, x, r, r * 0.66), rim)]
    for k in range(SPOKES):
        a = 2 * math.pi * k / SPOKES
        gap = [(x + rr * math.cos(a + da), r + rr * math.sin(a + da))
               for rr, da in ((r * 0.25, -0.30), (r * 0.58, -0.22), (r * 0.58, 0.22), (r * 0.25, 0.30))]
        decals.append((on_plane(plane, 1, gap), TRIM))
    decals.append((_disc(plane, x, r, r * 0.15, 10), rim))
    return tuple(decals)


def _mirror(spec: CarSpec, side: int) -> Solid:
    """A small box beside the A pillar, 17 cm beyond the body: a thin part that is in the mask."""
    x, z = spec.x_windshield - 0.18, spec.belt + 0.03
    y_in, y_out = side * (spec.width / 2 - SHOULDER[0] - 0.05), side * (spec.width / 2 + 0.17)
    planes = [
        Plane.through((x + 0.08, 0, 0), (1, 0, 0)), Plane.through((x - 0.06, 0, 0), (-1, 0, 0)),
        Plane.through((0, y_out, 0), (0, side, 0)), Plane.through((0, y_in, 0), (0, -side, 0)),
        Plane.through((0, 0, z + 0.14), (0, 0, 1)), Plane.through((0, 0, z), (0, 0, -1)),
    ]
    return convex_solid([Part(p, spec.mirror_paint, 0.5) for p in planes])


@dataclass(frozen=True)
class CarModel:
    spec: CarSpec
    body: Solid
    cabin: Solid
    wheels: tuple[Solid, ...]
    mirrors: tuple[tuple[int, Solid], ...]  # (side: +1 left, -1 right, solid)
    antenna: np.ndarray | None  # (2, 3) segment from the roof


def build_car(spec: CarSpec) -> CarModel:
    """Solids are built once per car and reused by all 16 angles, so the photos agree."""
    wheels = tuple(_wheel(spec, x, side) for x in (spec.x_front_axle, spec.x_rear_axle) for side in (1, -1))
    antenna = None
    if spec.antenna:
        base = np.array([spec.x_roof_rear + 0.12, 0.0, spec.roof])
        antenna = np.array([base, base + (-0.22, 0.0, 0.34)])
    return CarModel(spec, _body(spec), _cabin(spec), wheels, tuple((s, _mirror(spec, s)) for s in (1, -1)), antenna)
