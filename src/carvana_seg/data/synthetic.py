"""Synthetic Carvana-style data: the project's default dataset, in the competition's layout.

Each car is a small 3-D model (convex solids: body, cabin, four wheels, two mirrors and an
optional whip antenna) photographed from 16 angles on a turntable, in a studio like
Carvana's: a white wall with a grey logo, a grey floor with a soft horizon and a soft dark
floor shadow under the car. The traits that make the real photos hard are kept on purpose:
white and silver bodies on the white wall, dark glass and tyres, a shadow that is NOT in
the mask and thin parts (antenna, mirrors) that ARE. Solids are drawn back to front as
flat-shaded polygons; the mask is drawn by the very same polygon calls, so it is exactly
the painted car. Deterministic for a seed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont
from tqdm.auto import tqdm

from carvana_seg.config import ConfigError, parse_size as parse_pair
from carvana_seg.data.layout import PHOTOS_PER_CAR, write_mask_gif
from carvana_seg.data.staging import staged_folder
from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_path, atomic_write_text
from carvana_seg.rle import rle_encode

RGB = tuple[int, int, int]

# --- Dataset layout -------------------------------------------------------------------------
ANGLES = PHOTOS_PER_CAR  # photos per car, NN = 01..16: 01 front, 05 left side, 09 back, 13 right side
JPEG_QUALITY = 90
SUBMISSION_RLE = "1 1"  # every row of the official sample submission
METADATA_COLUMNS = ("id", "year", "make", "model", "trim1", "trim2")
STALE_PATTERNS = ("train/*.jpg", "test/*.jpg", "train_masks/*_mask.gif")  # removed by --force

# --- Camera (metres, car frame: x forward, y to the car's left, z up) ------------------------
CAMERA_DISTANCE = 7.5  # horizontal distance from the turntable centre
CAMERA_HEIGHT = 1.5  # about a sedan's roof: the hood shows, the roof barely
CAMERA_TARGET_Z = 0.55  # the camera looks at this point above the turntable centre...
TARGET_ROW_FRAC = 0.55  # ...which lands at this fraction of the image height
FOCAL_WIDTH_FRAC = 1.12  # focal length in image widths: how much of the frame the car fills

# --- Studio ---------------------------------------------------------------------------------
HORIZON_FRAC = (0.36, 0.48)  # wall/floor boundary, fraction of the height from the top
HORIZON_SOFTNESS_FRAC = 0.004  # width of the soft wall-to-floor transition, in heights
WALL_GREY = (232, 248)
FLOOR_GREY = (145, 205)  # floor just below the horizon; it brightens towards the camera
FLOOR_GAIN = (10, 28)
FLOOR_TINTS = ((-2, 0, 4), (0, 0, 0), (7, 2, -7))  # bluish grey, neutral, tan
WALL_TEXT = "CARVANA"
WALL_INK = (95, 135)
WALL_TEXT_HEIGHT_FRAC = (0.10, 0.17)  # letter height in image heights
WALL_TEXT_WIDTH_FRAC = (0.80, 0.95)
TURNTABLE_RADIUS = (3.3, 3.9)  # metres; its rim is a line on the floor
TURNTABLE_LINE_FRAC = 0.0015  # rim line width in image widths
NOISE_SIGMA = 2.0  # grey levels of sensor noise in the studio background
VIGNETTE_STRENGTH = 0.07  # corners this much darker than the centre (car included)
LENS_BLUR_FRAC = 0.5 / 1918  # box blur radius in image widths: soft edges in the photo, hard mask
SHADOW_MARGIN = 0.35  # metres the soft floor shadow reaches beyond the body's footprint
SHADOW_OPACITY = (120, 165, 200)  # 0..255: margin, under the body, tyre contact patches
SHADOW_DARKNESS = 0.30  # floor brightness left under a fully opaque shadow
SHADOW_SCALE = 8  # the shadow is drawn and blurred this many times smaller, then upsampled
SHADOW_BLUR_FRAC = 0.010  # blur radius in image widths

# --- Shading and details --------------------------------------------------------------------
AMBIENT = 0.62
DIFFUSE = 0.42
SKY_GLOSS = 70.0  # grey levels added to upward faces of glossy materials (studio ceiling)
ANTENNA_WIDTH_FRAC = 0.0022  # line width in image widths (4 px at 1918)
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

# A made-up catalogue for metadata.csv.
CATALOGUE = {
    "Altura": ("Vela", "Strada", "Cresta"), "Borealis": ("Nord", "Fjell", "Aurora"),
    "Kestrel": ("K3", "K5", "Talon"), "Meridian": ("Equinox", "Solstice", "Zenith"),
    "Orvane": ("Drift", "Pace", "Terra"), "Solano": ("Brisa", "Coral", "Mesa"),
}
TRIMS = (("Base", ""), ("S", ""), ("SE", "w/Tech"), ("LX", ""), ("Sport", "w/Premium"), ("Limited", "AWD"),
         ("Touring", "w/Nav"), ("EX", "w/Leather"))
YEARS = (2008, 2017)


# --- Convex solids from half-spaces ------------------------------------------------------------

@dataclass(frozen=True)
class Plane:
    """The half-space n.p <= offset; the unit normal n points out of the solid."""

    normal: np.ndarray
    offset: float

    @staticmethod
    def through(point: Sequence[float], normal: Sequence[float]) -> Plane:
        n = np.asarray(normal, dtype=float)
        n = n / np.linalg.norm(n)
        return Plane(n, float(n @ np.asarray(point, dtype=float)))

    def distance(self, points: np.ndarray) -> np.ndarray:
        return points @ self.normal - self.offset


Decal = tuple[np.ndarray, RGB]  # a convex polygon lying on a face, painted over it


@dataclass(frozen=True)
class Part:
    """A bounding half-space and the look of the face it becomes."""

    plane: Plane
    colour: RGB
    gloss: float = 0.0  # 0 matte .. 1 reflects the bright studio ceiling fully
    decals: tuple[Decal, ...] = ()


@dataclass(frozen=True)
class Face:
    points: np.ndarray  # (n, 3) convex polygon on `plane`
    plane: Plane
    colour: RGB
    gloss: float
    decals: tuple[Decal, ...]


@dataclass(frozen=True)
class Solid:
    faces: tuple[Face, ...]
    vertices: np.ndarray

    def behind(self, plane: Plane) -> bool:
        """Whether the whole solid is inside `plane`: behind the face when that face is visible."""
        return bool((plane.distance(self.vertices) <= 1e-6).all())


def clip_polygon(points: np.ndarray, plane: Plane) -> np.ndarray:
    """Sutherland-Hodgman: the part of a convex 3-D polygon inside the half-space."""
    if len(points) == 0:
        return points
    dist = plane.distance(points)
    out = []
    for i in range(len(points)):
        j = (i + 1) % len(points)
        if dist[i] <= 0:
            out.append(points[i])
        if (dist[i] < 0 < dist[j]) or (dist[j] < 0 < dist[i]):
            out.append(points[i] + dist[i] / (dist[i] - dist[j]) * (points[j] - points[i]))
    return np.array(out).reshape(-1, 3)


def _plane_square(plane: Plane, half_size: float = 50.0) -> np.ndarray:
    """A square on the plane much larger than any car: clipping it yields the face."""
    n = plane.normal
    u = np.cross(n, (0.0, 0.0, 1.0) if abs(n[2]) < 0.9 else (1.0, 0.0, 0.0))
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    corners = ((-1, -1), (1, -1), (1, 1), (-1, 1))
    return np.array([n * plane.offset + half_size * (a * u + b * v) for a, b in corners])


def _clip_all(polygon: np.ndarray, planes: Iterable[Plane]) -> np.ndarray:
    for plane in planes:
        polygon = clip_polygon(polygon, plane)
    return polygon


def convex_solid(parts: Sequence[Part]) -> Solid:
    """Intersect half-spaces; each plane that bounds the result becomes a face, decals clipped to it."""
    faces = []
    for i, part in enumerate(parts):
        others = [p.plane for k, p in enumerate(parts) if k != i]
        polygon = _clip_all(_plane_square(part.plane), others)
        if len(polygon) < 3:
            continue
        decals = tuple((d, c) for d, c in ((_clip_all(d, others), c) for d, c in part.decals) if len(d) >= 3)
        faces.append(Face(polygon, part.plane, part.colour, part.gloss, decals))
    return Solid(tuple(faces), np.concatenate([f.points for f in faces]))


def _on_plane(plane: Plane, axis: int, coords: Iterable[Sequence[float]]) -> np.ndarray:
    """3-D points on `plane` given their two other coordinates (solves for coordinate `axis`)."""
    a, b = [k for k in range(3) if k != axis]
    n, out = plane.normal, []
    for ca, cb in coords:
        p = np.zeros(3)
        p[a], p[b] = ca, cb
        p[axis] = (plane.offset - n[a] * ca - n[b] * cb) / n[axis]
        out.append(p)
    return np.array(out)


def _rect(a0: float, a1: float, b0: float, b1: float) -> list[tuple[float, float]]:
    return [(a0, b0), (a1, b0), (a1, b1), (a0, b1)]


def _profile_plane(p: Sequence[float], q: Sequence[float], outward: Sequence[float]) -> Plane:
    """Plane through side-profile points p, q = (x, z), spanning the car's width."""
    n = np.array([q[1] - p[1], 0.0, p[0] - q[0]])
    if n @ (outward[0], 0.0, outward[1]) < 0:
        n = -n
    return Plane.through((p[0], 0.0, p[1]), n)


def _plan_plane(p: Sequence[float], q: Sequence[float], outward: Sequence[float]) -> Plane:
    """Vertical plane through plan-view points p, q = (x, y)."""
    n = np.array([q[1] - p[1], p[0] - q[0], 0.0])
    if n @ (outward[0], outward[1], 0.0) < 0:
        n = -n
    return Plane.through((p[0], p[1], 0.0), n)


def _section_plane(p: Sequence[float], q: Sequence[float], outward: Sequence[float]) -> Plane:
    """Plane through cross-section points p, q = (y, z), running along the car's length."""
    n = np.array([0.0, q[1] - p[1], p[0] - q[0]])
    if n @ (0.0, outward[0], outward[1]) < 0:
        n = -n
    return Plane.through((0.0, p[0], p[1]), n)


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


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
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
    length, belt = _uniform(rng, k["length"]), _uniform(rng, k["belt"])
    x_windshield = length / 2 - _uniform(rng, k["hood"]) * length
    x_backlight = -length / 2 + _uniform(rng, k["trunk"]) * length
    wheel_radius = _uniform(rng, k["wheel"])
    rear_overhang = rng.uniform(0.55, 0.75) if k["trunk"][1] > 0.1 else rng.uniform(0.35, 0.50)
    paint = _jitter(rng, PAINTS[_pick(rng, [p[2] for p in PAINTS])][1])
    contrast = PAINT_RGB["black"] if sum(paint) > 300 else PAINT_RGB["white"]
    return CarSpec(
        kind=kind, length=length, width=_uniform(rng, k["width"]), roof=_uniform(rng, k["roof"]), belt=belt,
        clearance=_uniform(rng, k["clearance"]),
        nose=belt - rng.uniform(0.15, 0.28), tail=belt - rng.uniform(0.04, 0.14),
        x_windshield=x_windshield, x_roof_front=x_windshield - _uniform(rng, k["windshield"]),
        x_roof_rear=x_backlight + _uniform(rng, k["backlight"]), x_backlight=x_backlight,
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
    nose = _profile_plane((half_l - 0.06, spec.clearance), front, (1, 0))
    tail = _profile_plane((-half_l + 0.05, spec.clearance), back, (-1, 0))
    parts = [
        Part(nose, spec.paint, 0.3, _front_decals(spec, nose)),
        Part(tail, spec.paint, 0.3, _rear_decals(spec, tail)),
        Part(_profile_plane(front, (spec.x_windshield, spec.belt), (1, 1)), spec.paint, 1.0),  # hood
        Part(_profile_plane((spec.x_backlight, spec.belt), back, (-1, 1)), spec.paint, 1.0),  # trunk
        Part(Plane.through((0, 0, spec.belt), (0, 0, 1)), spec.paint, 1.0),
        Part(Plane.through((0, 0, spec.clearance), (0, 0, -1)), TRIM),
    ]
    for side in (1, -1):
        wall = Plane.through((0, side * half_w, 0), (0, side, 0))
        top_in, low_in = side * (half_w - SHOULDER[0]), side * (half_w - ROCKER[0])
        shoulder = _section_plane((side * half_w, spec.belt - SHOULDER[1]), (top_in, spec.belt), (side, 1))
        rocker = _section_plane((side * half_w, spec.clearance + ROCKER[1]), (low_in, spec.clearance), (side, -1))
        parts += [Part(wall, spec.paint, 0.3, _side_decals(spec, wall)), Part(shoulder, spec.paint, 0.8)]
        parts.append(Part(rocker, TRIM))
        for end, (cx, cy) in ((1, spec.corner_front), (-1, spec.corner_rear)):
            tip, root = (end * half_l, side * (half_w - cy)), (end * (half_l - cx), side * half_w)
            corner = _plan_plane(tip, root, (end, side))
            parts.append(Part(corner, spec.paint, 0.3, _corner_decals(spec, corner, end, side)))
    return convex_solid(parts)


def _front_decals(spec: CarSpec, plane: Plane) -> tuple[Decal, ...]:
    half = spec.width / 2 - spec.corner_front[1]
    light, low = (spec.nose - 0.13, spec.nose - 0.03), spec.clearance
    decals = [
        (_on_plane(plane, 0, _rect(-half * 0.42, half * 0.42, light[0] - 0.10, light[1])), TRIM),  # grille
        (_on_plane(plane, 0, _rect(-half * 0.90, half * 0.90, low + 0.02, low + 0.10)), TRIM),  # intake
        (_on_plane(plane, 0, _rect(-0.26, 0.26, low + 0.14, low + 0.26)), PLATE),
    ]
    decals += [(_on_plane(plane, 0, _rect(s * half * 0.52, s * half, *light)), HEADLIGHT) for s in (1, -1)]
    return tuple(decals)


def _rear_decals(spec: CarSpec, plane: Plane) -> tuple[Decal, ...]:
    half = spec.width / 2 - spec.corner_rear[1]
    top, low = spec.tail, spec.clearance
    decals = [
        (_on_plane(plane, 0, _rect(-half * 0.95, half * 0.95, low + 0.01, low + 0.08)), TRIM),  # diffuser
        (_on_plane(plane, 0, _rect(-0.26, 0.26, top - 0.36, top - 0.24)), PLATE),
    ]
    for s in (1, -1):
        decals.append((_on_plane(plane, 0, _rect(s * half * 0.62, s * half, top - 0.17, top - 0.04)), TAILLIGHT))
    return tuple(decals)


def _corner_decals(spec: CarSpec, plane: Plane, end: int, side: int) -> tuple[Decal, ...]:
    """Headlights and tail lights wrap around the chamfered corners."""
    half = spec.width / 2
    if end > 0:
        cy, z0, z1, colour = spec.corner_front[1], spec.nose - 0.13, spec.nose - 0.03, HEADLIGHT
    else:
        cy, z0, z1, colour = spec.corner_rear[1], spec.tail - 0.17, spec.tail - 0.04, TAILLIGHT
    return ((_on_plane(plane, 0, _rect(side * (half - cy), side * (half - cy * 0.3), z0, z1)), colour),)


def _side_decals(spec: CarSpec, plane: Plane) -> tuple[Decal, ...]:
    """Dark wheel wells, door seams and handles on a body side."""
    decals = []
    for x_axle in (spec.x_front_axle, spec.x_rear_axle):
        r = spec.wheel_radius * 1.14
        arc = [(x_axle + r * math.cos(a), spec.wheel_radius + r * math.sin(a)) for a in np.linspace(0, math.pi, 13)]
        decals.append((_on_plane(plane, 1, arc), TRIM))
    seam = tuple(int(c * 0.55) for c in spec.paint)
    z0, z1 = spec.clearance + ROCKER[1] + 0.03, spec.belt - SHOULDER[1] - 0.02
    door_front = spec.x_windshield - 0.05
    door_rear = max(spec.x_rear_axle + spec.wheel_radius * 1.2, spec.x_roof_rear - 0.1)
    door_mid = (door_front + door_rear) / 2
    handle = spec.belt - SHOULDER[1] - 0.10
    for x in (door_front, door_mid, door_rear):
        decals.append((_on_plane(plane, 1, _rect(x - 0.006, x + 0.006, z0, z1)), seam))
        if x != door_rear:
            decals.append((_on_plane(plane, 1, _rect(x - 0.28, x - 0.14, handle, handle + 0.035)), seam))
    return tuple(decals)


def _cabin(spec: CarSpec) -> Solid:
    """Greenhouse: a frustum on the deck. Glass is the face shrunk inwards; the rim reads as pillars."""
    half_base = spec.width / 2 - SHOULDER[0] - 0.01
    half_top = half_base - spec.tumblehome
    windshield = _profile_plane((spec.x_windshield, spec.belt), (spec.x_roof_front, spec.roof), (1, 1))
    backlight = _profile_plane((spec.x_backlight, spec.belt), (spec.x_roof_rear, spec.roof), (-1, 1))
    roof = Plane.through((0, 0, spec.roof), (0, 0, 1))
    floor = Plane.through((0, 0, spec.belt - 0.02), (0, 0, -1))  # sunk into the deck: no gap
    sides = [_section_plane((s * half_base, spec.belt), (s * half_top, spec.roof), (s, 0)) for s in (1, -1)]
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
    face = _clip_all(_plane_square(plane), [b for b in bounds if b is not plane])
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
        pane = _clip_all(glass, cuts)
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
    return _on_plane(plane, 1, [(x + radius * math.cos(a), z + radius * math.sin(a)) for a in angles])


def _rim_decals(plane: Plane, x: float, r: float, rim: RGB) -> tuple[Decal, ...]:
    decals = [(_disc(plane, x, r, r * 0.66), rim)]
    for k in range(SPOKES):
        a = 2 * math.pi * k / SPOKES
        gap = [(x + rr * math.cos(a + da), r + rr * math.sin(a + da))
               for rr, da in ((r * 0.25, -0.30), (r * 0.58, -0.22), (r * 0.58, 0.22), (r * 0.25, 0.30))]
        decals.append((_on_plane(plane, 1, gap), TRIM))
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


# --- Camera and drawing -----------------------------------------------------------------------

@dataclass(frozen=True)
class Camera:
    position: np.ndarray  # car frame
    axes: np.ndarray  # rows: right, up, forward
    focal: float  # pixels
    centre: tuple[float, float]  # pixel the optical axis hits
    light: np.ndarray  # unit vector towards the studio light, car frame

    def project(self, points: np.ndarray) -> list[tuple[float, float]]:
        rel = (np.asarray(points, dtype=float) - self.position) @ self.axes.T
        u = self.centre[0] + self.focal * rel[:, 0] / rel[:, 2]
        v = self.centre[1] - self.focal * rel[:, 1] / rel[:, 2]
        return list(zip(u.tolist(), v.tolist()))

    def sees(self, plane: Plane) -> bool:
        return float(plane.distance(self.position)) > 1e-9


def camera_for_angle(angle: int, size: tuple[int, int]) -> Camera:
    """The camera of photo NN = `angle` (1-based). The car turns, so in the car frame the camera orbits."""
    width, height = size
    phi = 2 * math.pi * (angle - 1) / ANGLES
    towards = np.array([math.cos(phi), math.sin(phi), 0.0])
    position = CAMERA_DISTANCE * towards + (0.0, 0.0, CAMERA_HEIGHT)
    forward = np.array([0.0, 0.0, CAMERA_TARGET_Z]) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    light = 0.55 * towards + 0.30 * np.array([-towards[1], towards[0], 0.0]) + (0.0, 0.0, 0.85)
    return Camera(position, np.stack([right, np.cross(right, forward), forward]), FOCAL_WIDTH_FRAC * width,
                  (width / 2, TARGET_ROW_FRAC * height), light / np.linalg.norm(light))


def _shade(colour: RGB, plane: Plane, gloss: float, camera: Camera) -> RGB:
    """Lambert light plus the white ceiling mirrored by glossy, upward faces."""
    lambert = max(0.0, float(plane.normal @ camera.light))
    sky = gloss * SKY_GLOSS * max(0.0, float(plane.normal[2])) ** 2
    rgb = np.asarray(colour, dtype=float) * (AMBIENT + DIFFUSE * lambert) + sky
    return tuple(int(c) for c in np.clip(rgb, 0, 255).round())


class Painter:
    """Draws each polygon on the photo and, as 1, on the mask: the mask is exactly what was painted."""

    def __init__(self, photo: Image.Image, mask: Image.Image, camera: Camera):
        self.photo, self.mask, self.camera = ImageDraw.Draw(photo), ImageDraw.Draw(mask), camera
        self.line_width = max(1, round(ANTENNA_WIDTH_FRAC * photo.width))

    def polygon(self, points: np.ndarray, colour: RGB) -> None:
        xy = self.camera.project(points)
        self.photo.polygon(xy, fill=colour)
        self.mask.polygon(xy, fill=1)

    def line(self, points: np.ndarray, colour: RGB) -> None:
        xy = self.camera.project(points)
        self.photo.line(xy, fill=colour, width=self.line_width)
        self.mask.line(xy, fill=1, width=self.line_width)

    def face(self, face: Face) -> None:
        self.polygon(face.points, _shade(face.colour, face.plane, face.gloss, self.camera))
        for points, colour in face.decals:
            self.polygon(points, _shade(colour, face.plane, face.gloss / 2, self.camera))

    def solid(self, solid: Solid) -> None:
        """The visible faces of one convex solid never overlap, so any order is right."""
        for face in solid.faces:
            if self.camera.sees(face.plane):
                self.face(face)


def draw_car(car: CarModel, painter: Painter) -> None:
    """Painter's algorithm with plane tests: a part is drawn before every visible face it lies behind.

    Wheels behind all visible body faces go first (far side; all four seen from the front).
    Wheels standing proud of a visible side go after that side but before the faces they are
    behind (bumper, hood). The cabin sits on the deck, after the body; the far mirror before it,
    the near one after. A roof antenna seen from below the roof line, from the front, goes
    behind the cabin.
    """
    cam = painter.camera
    body_faces = [f for f in car.body.faces if cam.sees(f.plane)]
    wheels = sorted(car.wheels, key=lambda w: -float(np.linalg.norm(w.vertices.mean(axis=0) - cam.position)))
    hidden = [w for w in wheels if all(w.behind(f.plane) for f in body_faces)]
    proud = [w for w in wheels if not any(w is h for h in hidden)]
    under = [f for f in body_faces if any(not w.behind(f.plane) for w in proud)]
    for wheel in hidden:
        painter.solid(wheel)
    for face in under:
        painter.face(face)
    for wheel in proud:
        painter.solid(wheel)
    for face in body_faces:
        if not any(face is f for f in under):
            painter.face(face)
    for side, mirror in car.mirrors:
        if side * cam.position[1] <= 0:
            painter.solid(mirror)
    antenna_behind = car.antenna is not None and cam.position[2] < car.spec.roof and cam.position[0] > car.antenna[0, 0]
    if antenna_behind:
        painter.line(car.antenna, TRIM)
    painter.solid(car.cabin)
    for side, mirror in car.mirrors:
        if side * cam.position[1] > 0:
            painter.solid(mirror)
    if car.antenna is not None and not antenna_behind:
        painter.line(car.antenna, TRIM)


# --- Studio and photos --------------------------------------------------------------------------

@dataclass(frozen=True)
class Studio:
    """One car's session: wall, floor and lights stay put while the car turns."""

    background: Image.Image
    shadowed: Image.Image  # the background under a fully opaque shadow
    vignette: Image.Image


def _wall_text(size: tuple[int, int], rng: np.random.Generator, horizon: int) -> tuple[Image.Image, tuple[int, int]]:
    """The grey logo on the wall, stretched to its box: an L alpha image and its top-left corner."""
    width, height = size
    letter_h = max(4, round(_uniform(rng, WALL_TEXT_HEIGHT_FRAC) * height))
    font = ImageFont.load_default(size=max(8, letter_h * 4 // 3))
    left, top, right, bottom = font.getbbox(WALL_TEXT)
    text = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(text).text((-left, -top), WALL_TEXT, font=font, fill=255)
    text_w = max(1, round(_uniform(rng, WALL_TEXT_WIDTH_FRAC) * width))
    text = text.resize((text_w, letter_h), Image.BILINEAR)
    x = (width - text_w) // 2 + round(rng.uniform(-0.03, 0.03) * width)
    return text, (x, horizon - letter_h - round(rng.uniform(0.0, 0.04) * height))


def make_studio(size: tuple[int, int], rng: np.random.Generator) -> Studio:
    """White wall with the grey logo, soft horizon, grey turntable floor, sensor noise."""
    width, height = size
    horizon = round(_uniform(rng, HORIZON_FRAC) * height)
    rows = np.arange(height, dtype=np.float32)[:, None]
    wall = _uniform(rng, WALL_GREY) + rng.uniform(-3, 3, 3)
    wall_rows = wall + 10 * np.clip(1 - (horizon - rows) / (0.08 * height), 0, 1)  # brighter near the floor
    floor_top = _uniform(rng, FLOOR_GREY) + np.array(FLOOR_TINTS[int(rng.integers(len(FLOOR_TINTS)))])
    floor_rows = floor_top + _uniform(rng, FLOOR_GAIN) * np.clip((rows - horizon) / max(1, height - horizon), 0, 1)
    blend = 0.5 + 0.5 * np.tanh((rows - horizon) / max(1.0, 2 * HORIZON_SOFTNESS_FRAC * height))
    profile = (wall_rows * (1 - blend) + floor_rows * blend).astype(np.float32)
    noise = rng.normal(0, NOISE_SIGMA, (height, width, 1)).astype(np.float32)
    background = Image.fromarray(np.clip(profile[:, None, :] + noise, 0, 255).astype(np.uint8))

    text, corner = _wall_text(size, rng, horizon)
    alpha = Image.new("L", size, 0)
    alpha.paste(text, corner)
    alpha.paste(0, (0, horizon, width, height))  # the logo is on the wall only
    ink = round(_uniform(rng, WALL_INK))
    background.paste(Image.new("RGB", size, (ink, ink, ink)), (0, 0), alpha)

    radius = _uniform(rng, TURNTABLE_RADIUS)
    ring = np.array([(radius * math.cos(a), radius * math.sin(a), 0.0) for a in np.linspace(0, 2 * math.pi, 91)])
    rim = tuple(int(c) for c in np.clip(floor_top - rng.uniform(12, 30), 0, 255))
    rim_width = max(1, round(TURNTABLE_LINE_FRAC * width))
    ImageDraw.Draw(background).line(camera_for_angle(1, size).project(ring), fill=rim, width=rim_width)

    shadowed = background.point(lambda v: round(v * SHADOW_DARKNESS))
    return Studio(background, shadowed, _vignette(size))


def _vignette(size: tuple[int, int]) -> Image.Image:
    """Light fall-off towards the corners, multiplied over the finished photo."""
    width, height = size
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    gain = 1 - VIGNETTE_STRENGTH * (x**2 + y**2) / 2
    return Image.fromarray(np.round(gain * 255).astype(np.uint8)).convert("RGB")


def _ground_ellipse(x: float, y: float, rx: float, ry: float, corners: int = 16) -> np.ndarray:
    angles = np.linspace(0, 2 * math.pi, corners, endpoint=False)
    return np.column_stack([x + rx * np.cos(angles), y + ry * np.sin(angles), np.zeros(corners)])


def _footprint(spec: CarSpec, margin: float) -> np.ndarray:
    """The body's chamfered plan outline on the floor, grown by `margin`."""
    hl, hw = spec.length / 2 + margin, spec.width / 2 + margin
    (fx, fy), (rx, ry) = spec.corner_front, spec.corner_rear
    plan = [(hl, hw - fy), (hl - fx, hw), (-hl + rx, hw), (-hl, hw - ry),
            (-hl, -hw + ry), (-hl + rx, -hw), (hl - fx, -hw), (hl, -hw + fy)]
    return np.array([(x, y, 0.0) for x, y in plan])


def shadow_layer(car: CarModel, camera: Camera, size: tuple[int, int]) -> Image.Image:
    """Soft floor shadow opacity (L): drawn small, blurred, upsampled (cheap at full size)."""
    width, height = size
    small = (max(1, math.ceil(width / SHADOW_SCALE)), max(1, math.ceil(height / SHADOW_SCALE)))
    sx, sy = small[0] / width, small[1] / height
    layer = Image.new("L", small, 0)
    draw = ImageDraw.Draw(layer)

    def fill(points: np.ndarray, opacity: int) -> None:
        draw.polygon([(u * sx, v * sy) for u, v in camera.project(points)], fill=opacity)

    spec = car.spec
    fill(_footprint(spec, SHADOW_MARGIN), SHADOW_OPACITY[0])
    fill(_footprint(spec, 0.0), SHADOW_OPACITY[1])
    for x in (spec.x_front_axle, spec.x_rear_axle):
        for side in (1, -1):
            y = side * (spec.width / 2 - spec.wheel_width / 2)
            fill(_ground_ellipse(x, y, spec.wheel_radius * 0.9, spec.wheel_width * 0.8), SHADOW_OPACITY[2])
    layer = layer.filter(ImageFilter.GaussianBlur(SHADOW_BLUR_FRAC * small[0]))
    return layer.resize(size, Image.BILINEAR)


def render_view(car: CarModel, studio: Studio, angle: int) -> tuple[Image.Image, np.ndarray]:
    """Photo NN = `angle` of a car in its studio: the RGB image and its 0/1 uint8 mask."""
    size = studio.background.size
    camera = camera_for_angle(angle, size)
    photo = Image.composite(studio.shadowed, studio.background, shadow_layer(car, camera, size))
    mask = Image.new("L", size, 0)
    draw_car(car, Painter(photo, mask, camera))
    photo = photo.filter(ImageFilter.BoxBlur(LENS_BLUR_FRAC * size[0]))
    return ImageChops.multiply(photo, studio.vignette), np.asarray(mask)


# --- The dataset --------------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` (e.g. 1918x1280, the Carvana photo size) -> (width, height)."""
    try:
        width, height = parse_pair(text, "--size")
    except ConfigError:
        width = height = 0
    if min(width, height) < 16:
        raise PipelineError(f"--size: expected WIDTHxHEIGHT, both at least 16 (e.g. 1918x1280), got {text!r}")
    return width, height


def car_ids(seed: int, count: int) -> list[str]:
    """`count` distinct 12-hex-digit car ids, like the competition's, from the seed."""
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    while len(ids) < count:
        car = rng.bytes(6).hex()
        if car not in ids:
            ids.append(car)
    return ids


def _car_rng(seed: int, car: str, stream: int) -> np.random.Generator:
    """Independent streams per car (0: look, 1: metadata): a car does not depend on the others."""
    return np.random.default_rng([seed, int(car, 16), stream])


def _metadata_row(car: str, rng: np.random.Generator) -> list[str]:
    make = list(CATALOGUE)[int(rng.integers(len(CATALOGUE)))]
    model = CATALOGUE[make][int(rng.integers(len(CATALOGUE[make])))]
    trim1, trim2 = TRIMS[int(rng.integers(len(TRIMS)))]
    return [car, str(int(rng.integers(YEARS[0], YEARS[1] + 1))), make, model, f"{model} {trim1}".strip(), trim2]


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[str]], quote_all: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _check_output(out: Path, force: bool) -> None:
    """Refuse a non-empty folder unless forced (when forced, old photos and masks are replaced
    once the new ones are complete, so none go stale: see staging.py)."""
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PipelineError(f"output folder {out} is not empty: pass --force to write into it")


def _write_car(out: Path, car: str, split: str, size: tuple[int, int], seed: int, bar: tqdm) -> list[list[str]]:
    """The 16 photos of one car (and masks for train); returns its train_masks.csv rows."""
    rng = _car_rng(seed, car, 0)
    model = build_car(sample_car(rng))
    studio = make_studio(size, rng)
    rows = []
    for angle in range(1, ANGLES + 1):
        image_id = f"{car}_{angle:02d}"
        photo, mask = render_view(model, studio, angle)
        with atomic_path(out / split / f"{image_id}.jpg") as tmp:
            photo.save(tmp, format="JPEG", quality=JPEG_QUALITY)
        if split == "train":
            with atomic_path(out / "train_masks" / f"{image_id}_mask.gif") as tmp:
                write_mask_gif(mask, tmp)
            rows.append([f"{image_id}.jpg", rle_encode(mask)])
        bar.update()
    return rows


def generate(out: str | Path, cars: int = 8, test_cars: int = 2, size: tuple[int, int] = (1918, 1280),
             seed: int = 0, force: bool = False) -> Path:
    """Write a Carvana-layout dataset: `cars` train and `test_cars` test cars, 16 photos each.

    `size` is (width, height). Same arguments, same bytes. Returns `out`. Everything is written
    into a hidden staging folder that becomes `out` only when complete, so a killed run
    leaves no half dataset.
    """
    if cars < 1 or test_cars < 0:
        raise PipelineError(f"need --cars >= 1 and --test-cars >= 0, got --cars {cars} --test-cars {test_cars}")
    out = Path(out)
    _check_output(out, force)
    with staged_folder(out, STALE_PATTERNS) as staging:
        _write_dataset(staging, cars, test_cars, size, seed)
    return out


def _write_dataset(out: Path, cars: int, test_cars: int, size: tuple[int, int], seed: int) -> None:
    """Write every photo, mask and CSV of the dataset into the (staging) folder `out`."""
    ids = car_ids(seed, cars + test_cars)
    train, test = sorted(ids[:cars]), sorted(ids[cars:])
    for folder in ("train", "train_masks", "test"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rle_rows = []
    with tqdm(total=len(ids) * ANGLES, desc=f"synthetic {size[0]}x{size[1]}", unit="img", disable=None) as bar:
        for car in train:
            rle_rows += _write_car(out, car, "train", size, seed, bar)
        for car in test:
            _write_car(out, car, "test", size, seed, bar)
    submission = [[f"{car}_{angle:02d}.jpg", SUBMISSION_RLE] for car in test for angle in range(1, ANGLES + 1)]
    metadata = [_metadata_row(car, _car_rng(seed, car, 1)) for car in sorted(ids)]
    atomic_write_text(out / "train_masks.csv", _csv_text(["img", "rle_mask"], rle_rows))
    atomic_write_text(out / "sample_submission.csv", _csv_text(["img", "rle_mask"], submission))
    atomic_write_text(out / "metadata.csv", _csv_text(METADATA_COLUMNS, metadata, quote_all=True))
    provenance = {"generator": __name__, "cars": cars, "test_cars": test_cars, "size": list(size), "seed": seed}
    atomic_write_text(out / "synthetic.json", json.dumps(provenance, indent=2) + "\n")  # how the folder was made
