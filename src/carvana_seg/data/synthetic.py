"""Synthetic Carvana-style data: the project's default dataset, in the competition's layout.

Each car is a small 3-D model (body, tapered cabin, wheels, mirrors, optional antenna)
turning on a stand in a light studio; the 16 photos are 16 yaw angles of the same model.
The traits that make real Carvana hard are kept on purpose: white and silver bodies on a
white background, dark windows and tyres, a soft floor shadow that is NOT in the mask and
thin parts (antenna, mirrors) that ARE. Deterministic for a seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from carvana_seg.data.layout import write_mask_gif
from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_path, atomic_write_text
from carvana_seg.rle import rle_encode

ANGLES = 16
JPEG_QUALITY = 90
ELEVATION_DEG = 12.0  # camera slightly above the car, as in the studio photos
CAR_SCREEN_LENGTH = 0.72  # car length as a share of the image width
HORIZON = 0.56  # wall/floor boundary as a share of the height
# Body colours (RGB): white and silver first, since they are the hard cases on a white studio.
BODY_COLOURS = [(236, 236, 234), (192, 194, 198), (150, 152, 156), (28, 28, 32), (150, 20, 24), (24, 52, 120),
                (40, 90, 60), (200, 160, 40), (90, 60, 40), (110, 120, 140)]
WINDOW_COLOUR = (38, 42, 48)
TYRE_COLOUR = (22, 22, 24)
RIM_COLOUR = (150, 150, 155)
MAKES = [("Acura", "TL"), ("Audi", "A4"), ("BMW", "328i"), ("Chevrolet", "Malibu"), ("Ford", "Fusion"),
         ("Honda", "Accord"), ("Hyundai", "Sonata"), ("Kia", "Optima"), ("Toyota", "Camry"), ("Volkswagen", "Jetta")]


@dataclass(frozen=True)
class CarModel:
    """Dimensions in car lengths (length 1), plus colour and optional parts."""

    width: float
    body_height: float
    clearance: float
    cabin_start: float  # along the length, from the rear (0) to the front (1)
    cabin_end: float
    cabin_height: float
    roof_taper: float  # share of the cabin length lost at the roof, front and back
    wheel_radius: float
    colour: tuple[int, int, int]
    antenna: bool

    @classmethod
    def random(cls, rng: np.random.Generator, colour_index: int) -> CarModel:
        start = rng.uniform(0.22, 0.32)
        return cls(
            width=rng.uniform(0.38, 0.44),
            body_height=rng.uniform(0.15, 0.2),
            clearance=rng.uniform(0.04, 0.06),
            cabin_start=start,
            cabin_end=start + rng.uniform(0.38, 0.5),
            cabin_height=rng.uniform(0.11, 0.15),
            roof_taper=rng.uniform(0.12, 0.25),
            wheel_radius=rng.uniform(0.075, 0.09),
            colour=BODY_COLOURS[colour_index % len(BODY_COLOURS)],
            antenna=bool(rng.random() < 0.6),
        )


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, top_inset: float = 0.0) -> np.ndarray:
    """The 8 corners (x, y, z) of a box whose top face may be inset along x (a tapered cabin)."""
    return np.array([
        [x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
        [x0 + top_inset, y0, z1], [x1 - top_inset, y0, z1], [x1 - top_inset, y1, z1], [x0 + top_inset, y1, z1],
    ])


# Corner order of each face so that (b - a) x (c - a) points outward:
# bottom, top, side y0, side y1, front (x1), back (x0).
BOX_FACES = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (3, 7, 6, 2), (1, 2, 6, 5), (0, 4, 7, 3)]


class Camera:
    """Orthographic view of the turntable from `yaw`, slightly from above, centred on the car."""

    def __init__(self, yaw_deg: float, size: tuple[int, int]):
        self.yaw, self.elev = math.radians(yaw_deg), math.radians(ELEVATION_DEG)
        self.width, self.height = size
        self.scale = CAR_SCREEN_LENGTH * self.width
        self.centre = (0.5 * self.width, 0.62 * self.height)

    def view(self, points: np.ndarray) -> np.ndarray:
        """Car coordinates -> (right, up, toward-camera) in camera space."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        right = c * points[:, 0] + s * points[:, 1]
        depth = -s * points[:, 0] + c * points[:, 1]
        up = points[:, 2] * math.cos(self.elev) - depth * math.sin(self.elev)
        toward = depth * math.cos(self.elev) + points[:, 2] * math.sin(self.elev)
        return np.stack([right, up, toward], axis=1)

    def project(self, points: np.ndarray) -> list[tuple[float, float]]:
        cam = self.view(points)
        return [(self.centre[0] + self.scale * r, self.centre[1] - self.scale * u) for r, u, _ in cam]


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor + (255 - c) * max(0.0, factor - 1.0), 0, 255)) for c in colour)


def _draw_box(draws: list[ImageDraw.ImageDraw], camera: Camera, corners: np.ndarray, colours: list[tuple[int, int, int]]) -> None:
    """Painter's-order visible faces of a box; `colours` per face (already shaded)."""
    cam = camera.view(corners)
    screen = camera.project(corners)
    faces = []
    for face, colour in zip(BOX_FACES, colours):
        a, b, c = (corners[i] for i in face[:3])
        normal = camera.view(np.cross(b - a, c - a)[None])[0]
        if normal[2] > 1e-12:  # the outward normal points toward the camera
            faces.append((cam[list(face), 2].mean(), face, colour))
    image_draw, mask_draw = draws
    for _, face, colour in sorted(faces):
        polygon = [screen[i] for i in face]
        image_draw.polygon(polygon, fill=colour)
        mask_draw.polygon(polygon, fill=1)


def _wheel(camera: Camera, centre_x: float, side_y: float, radius: float, z: float) -> tuple[list, list]:
    """Tyre and rim outlines: a disc in the car's x-z plane at y = side_y."""
    t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    tyre = np.stack([centre_x + radius * np.cos(t), np.full_like(t, side_y), z + radius * np.sin(t)], axis=1)
    rim = np.stack([centre_x + 0.6 * radius * np.cos(t), np.full_like(t, side_y), z + 0.6 * radius * np.sin(t)], axis=1)
    return camera.project(tyre), camera.project(rim)


def render_car(car: CarModel, yaw_deg: float, size: tuple[int, int], rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """One studio photo (RGB) and its 0/1 mask at `size` (width, height)."""
    width, height = size
    camera = Camera(yaw_deg, size)
    image = _studio_background(size, rng)
    _floor_shadow(image, camera, car)
    mask = Image.new("L", size, 0)
    draws = [ImageDraw.Draw(image), ImageDraw.Draw(mask)]

    half_w, x0, x1 = car.width / 2, -0.5, 0.5
    wheel_z = car.wheel_radius
    wheel_xs = (x0 + 0.18, x1 - 0.2)
    # The far side's wheels and mirror first, then the body, then the near side (painter's order).
    sides = sorted((-1, 1), key=lambda side: camera.view(np.array([[0.0, side * half_w, 0.0]]))[0, 2])
    for index, side in enumerate(sides):
        if index == 1:
            _draw_car_body(draws, camera, car)
        for wx in wheel_xs:
            tyre, rim = _wheel(camera, wx, side * half_w * 1.01, car.wheel_radius, wheel_z)
            for draw, fill in zip(draws, (TYRE_COLOUR, 1)):
                draw.polygon(tyre, fill=fill)
            draws[0].polygon(rim, fill=RIM_COLOUR)
        _draw_mirror(draws, camera, car, side)
    if car.antenna:
        _draw_antenna(draws, camera, car, max(1, round(width / 900)))
    image = image.filter(ImageFilter.GaussianBlur(radius=max(0.5, width / 2400)))  # soft lens edges; the mask stays hard
    return image, np.asarray(mask, dtype=np.uint8)


def _draw_car_body(draws: list[ImageDraw.ImageDraw], camera: Camera, car: CarModel) -> None:
    half_w, z0 = car.width / 2, car.clearance
    z1 = z0 + car.body_height
    light = {0: 0.55, 1: 1.08, 2: 0.9, 3: 0.8, 4: 0.95, 5: 0.85}  # bottom, top, sides, front, back
    body = _box(-0.5, 0.5, -half_w, half_w, z0, z1)
    _draw_box(draws, camera, body, [_shade(car.colour, light[i]) for i in range(6)])
    cx0, cx1 = -0.5 + car.cabin_start, -0.5 + car.cabin_end
    taper = car.roof_taper * (cx1 - cx0)
    cabin = _box(cx0, cx1, -half_w * 0.86, half_w * 0.86, z1, z1 + car.cabin_height, top_inset=taper)
    roof = _shade(car.colour, 1.05)
    _draw_box(draws, camera, cabin, [roof, roof, WINDOW_COLOUR, WINDOW_COLOUR, WINDOW_COLOUR, WINDOW_COLOUR])


def _draw_mirror(draws: list[ImageDraw.ImageDraw], camera: Camera, car: CarModel, side: int) -> None:
    """A side mirror: small, but part of the car, so part of the mask."""
    half_w, z1 = car.width / 2, car.clearance + car.body_height
    x = -0.5 + car.cabin_end - 0.02
    mirror = np.array([[x, side * half_w * 0.95, z1 + 0.02], [x, side * (half_w + 0.06), z1 + 0.02],
                       [x - 0.03, side * (half_w + 0.06), z1 + 0.045], [x - 0.03, side * half_w * 0.95, z1 + 0.045]])
    polygon = camera.project(mirror)
    draws[0].polygon(polygon, fill=_shade(car.colour, 0.8))
    draws[1].polygon(polygon, fill=1)


def _draw_antenna(draws: list[ImageDraw.ImageDraw], camera: Camera, car: CarModel, line_width: int) -> None:
    """A roof antenna a pixel or two wide: the thinnest part the mask must keep."""
    base_x = -0.5 + car.cabin_start + 0.05
    top = car.clearance + car.body_height + car.cabin_height
    line = camera.project(np.array([[base_x, 0.0, top], [base_x - 0.05, 0.0, top + 0.12]]))
    draws[0].line(line, fill=(30, 30, 30), width=line_width)
    draws[1].line(line, fill=1, width=line_width)


def _studio_background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Light grey wall above a lighter floor, a soft horizon and mild sensor noise."""
    width, height = size
    rows = np.linspace(0, 1, height)[:, None]
    wall = 222 + 12 * rows / HORIZON
    floor = 240 + 8 * (rows - HORIZON) / (1 - HORIZON)
    blend = np.clip((rows - HORIZON) / 0.03 + 0.5, 0, 1)
    tone = float(rng.uniform(-6, 4))
    grey = (1 - blend) * wall + blend * floor + tone
    noise = rng.normal(0, 1.5, (height // 8 + 1, width // 8 + 1))
    noise = np.kron(noise, np.ones((8, 8)))[:height, :width]
    plane = np.clip(grey + noise, 0, 255)
    return Image.fromarray(np.repeat(plane[:, :, None], 3, axis=2).astype(np.uint8))


def _floor_shadow(image: Image.Image, camera: Camera, car: CarModel) -> None:
    """A soft dark ellipse on the floor under the car: in the photo, not in the mask."""
    width, height = image.size
    small = (max(8, width // 8), max(8, height // 8))
    footprint = np.array([[x, y, 0.0] for x in (-0.62, 0.62) for y in (-car.width * 0.7, car.width * 0.7)])
    points = [(x / 8, y / 8) for x, y in camera.project(footprint)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    shade = Image.new("L", small, 0)
    ImageDraw.Draw(shade).ellipse([min(xs), min(ys) - 2, max(xs), max(ys) + 2], fill=110)
    shade = shade.filter(ImageFilter.GaussianBlur(radius=max(1.0, small[0] / 60))).resize(image.size, Image.BILINEAR)
    darkened = Image.eval(image, lambda v: int(v * 0.45))
    image.paste(darkened, (0, 0), shade)


def _car_ids(rng: np.random.Generator, count: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < count:
        car = "".join(rng.choice(list("0123456789abcdef"), 12))
        if car not in ids:
            ids.append(car)
    return ids


def generate(out: str | Path, cars: int, test_cars: int, size: tuple[int, int] = (1918, 1280), seed: int = 0, force: bool = False) -> Path:
    """Write a Carvana-layout dataset of `cars` train and `test_cars` test cars, 16 angles each."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise PipelineError(f"{out} is not empty: pass --force to write into it")
    for folder in ("train", "train_masks", "test"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    car_ids = _car_ids(rng, cars + test_cars)
    colours = rng.permutation(max(len(BODY_COLOURS), cars + test_cars)) % len(BODY_COLOURS)
    rle_rows, test_rows = [], []
    jobs = [(k, car, angle) for k, car in enumerate(car_ids) for angle in range(1, ANGLES + 1)]
    models = {car: CarModel.random(np.random.default_rng([seed, k]), int(colours[k])) for k, car in enumerate(car_ids)}
    for k, car, angle in tqdm(jobs, desc=f"synthetic cars at {size[0]}x{size[1]}"):
        image_id = f"{car}_{angle:02d}"
        yaw = 90.0 + (angle - 1) * 360.0 / ANGLES  # 01: front towards the camera, 09: the back
        image, mask = render_car(models[car], yaw, size, np.random.default_rng([seed, k, angle]))
        split = "train" if k < cars else "test"
        with atomic_path(out / split / f"{image_id}.jpg") as tmp:
            image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
        if split == "train":
            with atomic_path(out / "train_masks" / f"{image_id}_mask.gif") as tmp:
                write_mask_gif(mask, tmp)
            rle_rows.append((f"{image_id}.jpg", rle_encode(mask)))
        else:
            test_rows.append((f"{image_id}.jpg", "1 1"))
    for name, rows in (("train_masks.csv", rle_rows), ("sample_submission.csv", sorted(test_rows))):
        with atomic_path(out / name) as tmp:
            pd.DataFrame(rows, columns=["img", "rle_mask"]).to_csv(tmp, index=False)
    metadata = [(car, 2010 + k % 8, *MAKES[k % len(MAKES)], "Base", "") for k, car in enumerate(car_ids)]
    with atomic_path(out / "metadata.csv") as tmp:
        pd.DataFrame(metadata, columns=["id", "year", "make", "model", "trim1", "trim2"]).to_csv(tmp, index=False, quoting=1)
    atomic_write_text(out / "synthetic.json", json.dumps({"cars": cars, "test_cars": test_cars, "size": list(size), "seed": seed}))
    return out
