"""A picture of a dataset: photos with their masks tinted green and outlined, over cars and angles."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from carvana_seg.data.layout import CarvanaLayout, read_image, split_id
from carvana_seg.io_utils import atomic_path

TILE = (360, 240)  # width, height of one thumbnail
COLUMNS = 4
TINT = np.array([0, 255, 90], np.float32)


def preview_grid(root: str | Path, out: str | Path, count: int = 12) -> Path:
    """Save a grid of `count` photos spread over cars and angles, mask tinted and outlined."""
    layout = CarvanaLayout(root)
    ids = layout.train_ids
    picks = [ids[int(i)] for i in np.linspace(0, len(ids) - 1, count)]
    tiles = []
    for image_id in picks:
        image = read_image(layout.image_path(image_id))
        mask = layout.read_mask(image_id, image.shape[:2]).astype(bool)
        painted = image.astype(np.float32)
        painted[mask] = 0.8 * painted[mask] + 0.2 * TINT
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        painted = cv2.drawContours(painted.astype(np.uint8), contours, -1, (0, 200, 60), max(1, image.shape[1] // 400))
        tile = cv2.resize(painted, TILE, interpolation=cv2.INTER_AREA)
        cv2.putText(tile, f"{split_id(image_id)[0][:6]} {split_id(image_id)[1]:02d}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        tiles.append(tile)
    while len(tiles) % COLUMNS:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i : i + COLUMNS], axis=1) for i in range(0, len(tiles), COLUMNS)]
    grid = np.concatenate(rows, axis=0)
    out = Path(out)
    ok, encoded = cv2.imencode(out.suffix or ".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError(f"cannot encode an image as {out.suffix!r}")
    with atomic_path(out) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return out
