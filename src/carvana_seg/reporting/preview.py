"""A preview grid of a Carvana-layout folder: rows are cars, columns angles, mask tinted and outlined.

Shows at a glance whether masks sit exactly on the cars (thin parts in, shadow out).
The PNG is palette-quantised so the grid of 480x320 thumbnails stays small.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from carvana_seg.data.layout import open_image
from carvana_seg.errors import PipelineError
from carvana_seg.io_utils import atomic_path

THUMB = (480, 320)  # width, height of one tile
ANGLES = (1, 3, 5, 10)  # front, three-quarter, side, rear three-quarter
TINT = (0, 220, 90)
TINT_ALPHA = 0.15
OUTLINE = (0, 255, 60)
PALETTE_COLOURS = 256  # octree keeps small colour areas (tail lights) that median cut drops


def overlay(photo_path: Path, mask_path: Path) -> Image.Image:
    """A thumbnail with the mask tinted and its outline drawn, so misfits show at the edges."""
    with open_image(photo_path) as img:  # header size checked first, errors name the file
        photo = img.convert("RGB").resize(THUMB, Image.BOX)
    with open_image(mask_path, "mask") as img:
        mask = img.point(lambda v: 255 * (v > 0), mode="L").resize(THUMB, Image.NEAREST)
    tinted = Image.blend(photo, Image.new("RGB", THUMB, TINT), TINT_ALPHA)
    tile = Image.composite(tinted, photo, mask)
    edge = ImageChops.subtract(mask, mask.filter(ImageFilter.MinFilter(3)))
    tile.paste(OUTLINE, (0, 0), edge)
    ImageDraw.Draw(tile).text((6, 4), f"{photo_path.stem}", fill=(0, 0, 0))
    return tile


def preview(data: Path, out: Path, cars: int) -> Path:
    """Grid of the first `cars` train cars at ANGLES, written as a quantised PNG."""
    car_ids = sorted({p.stem.rsplit("_", 1)[0] for p in (data / "train").glob("*.jpg")})[:cars]
    if not car_ids:
        raise PipelineError(f"{data / 'train'} holds no photos: run scripts/make_synthetic.py --out {data} first")
    grid = Image.new("RGB", (THUMB[0] * len(ANGLES), THUMB[1] * len(car_ids)), "white")
    for row, car in enumerate(car_ids):
        for col, angle in enumerate(ANGLES):
            stem = f"{car}_{angle:02d}"
            tile = overlay(data / "train" / f"{stem}.jpg", data / "train_masks" / f"{stem}_mask.gif")
            grid.paste(tile, (col * THUMB[0], row * THUMB[1]))
    small = grid.quantize(PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE)
    with atomic_path(out) as tmp:
        small.save(tmp, format="PNG", optimize=True)
    return out
