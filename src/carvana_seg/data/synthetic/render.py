"""Photographing a car: the turntable camera, the studio, the soft floor shadow and the painter.

The painter draws every polygon on the photo and on the mask with the same call, back to
front, so the mask is exactly the painted car; the shadow is on the floor, not in the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from carvana_seg.data.layout import PHOTOS_PER_CAR
from carvana_seg.data.synthetic.cars import TRIM, CarModel, CarSpec, uniform
from carvana_seg.data.synthetic.geometry import RGB, Face, Plane, Solid

ANGLES = PHOTOS_PER_CAR  # photos per car, NN = 01..16: 01 front, 05 left side, 09 back, 13 right side

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

# --- Shading --------------------------------------------------------------------------------
AMBIENT = 0.62
DIFFUSE = 0.42
SKY_GLOSS = 70.0  # grey levels added to upward faces of glossy materials (studio ceiling)
ANTENNA_WIDTH_FRAC = 0.0022  # line width in image widths (4 px at 1918)


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
    letter_h = max(4, round(uniform(rng, WALL_TEXT_HEIGHT_FRAC) * height))
    font = ImageFont.load_default(size=max(8, letter_h * 4 // 3))
    left, top, right, bottom = font.getbbox(WALL_TEXT)
    text = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(text).text((-left, -top), WALL_TEXT, font=font, fill=255)
    text_w = max(1, round(uniform(rng, WALL_TEXT_WIDTH_FRAC) * width))
    text = text.resize((text_w, letter_h), Image.BILINEAR)
    x = (width - text_w) // 2 + round(rng.uniform(-0.03, 0.03) * width)
    return text, (x, horizon - letter_h - round(rng.uniform(0.0, 0.04) * height))


def make_studio(size: tuple[int, int], rng: np.random.Generator) -> Studio:
    """White wall with the grey logo, soft horizon, grey turntable floor, sensor noise."""
    width, height = size
    horizon = round(uniform(rng, HORIZON_FRAC) * height)
    rows = np.arange(height, dtype=np.float32)[:, None]
    wall = uniform(rng, WALL_GREY) + rng.uniform(-3, 3, 3)
    wall_rows = wall + 10 * np.clip(1 - (horizon - rows) / (0.08 * height), 0, 1)  # brighter near the floor
    floor_top = uniform(rng, FLOOR_GREY) + np.array(FLOOR_TINTS[int(rng.integers(len(FLOOR_TINTS)))])
    floor_rows = floor_top + uniform(rng, FLOOR_GAIN) * np.clip((rows - horizon) / max(1, height - horizon), 0, 1)
    blend = 0.5 + 0.5 * np.tanh((rows - horizon) / max(1.0, 2 * HORIZON_SOFTNESS_FRAC * height))
    profile = (wall_rows * (1 - blend) + floor_rows * blend).astype(np.float32)
    noise = rng.normal(0, NOISE_SIGMA, (height, width, 1)).astype(np.float32)
    background = Image.fromarray(np.clip(profile[:, None, :] + noise, 0, 255).astype(np.uint8))

    text, corner = _wall_text(size, rng, horizon)
    alpha = Image.new("L", size, 0)
    alpha.paste(text, corner)
    alpha.paste(0, (0, horizon, width, height))  # the logo is on the wall only
    ink = round(uniform(rng, WALL_INK))
    background.paste(Image.new("RGB", size, (ink, ink, ink)), (0, 0), alpha)

    radius = uniform(rng, TURNTABLE_RADIUS)
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
