"""Darken the studio floor around a car, leaving the car (and so the mask) untouched.

Why: most Carvana studios have a light floor. In `../shared/carvana` one car (an Infiniti
G35) was shot on a dark, reflective turntable with a dark strip of floor along the bottom,
and a model that had only seen light floors painted its shadow and that strip as car
(`docs/carvana_failure.png`). This transform shows the model dark floors during training:
a soft shadow under the car and, half of the time, a dark band along the image's bottom
edge. Only background pixels are darkened, so the mask stays exactly right.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

SHADE = (0.3, 0.8)  # fraction of brightness taken away, drawn per image
SHADOW_WIDTH = (0.6, 1.1)  # shadow's half-width as a fraction of the car's half-width
SHADOW_HEIGHT = (0.04, 0.15)  # shadow's half-height as a fraction of the image height
BAND_PROBABILITY = 0.5
BLUR = 0.02  # Gaussian sigma of the shade's edges, as a fraction of the image height


class DarkenFloor(A.ImageOnlyTransform):
    """Multiply background pixels under and below the car by (1 - shade)."""

    def __init__(self, p: float = 0.5):
        super().__init__(p=p)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        if "mask" not in data:
            raise ValueError("DarkenFloor needs the mask: it darkens background pixels only")
        car = np.asarray(data["mask"]) > 0  # any coverage: a pixel that is partly car keeps its colour
        height, width = car.shape[:2]
        rows, cols = np.flatnonzero(car.any(axis=1)), np.flatnonzero(car.any(axis=0))
        if len(rows) == 0:
            return {"shade": None}
        top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
        uniform = self.random_generator.uniform
        shade = np.zeros((height, width), np.float32)

        centre = (round((left + right) / 2), round(bottom - uniform(0.0, 0.1) * (bottom - top)))
        axes = (max(1, int(uniform(*SHADOW_WIDTH) * (right - left) / 2)), max(1, int(uniform(*SHADOW_HEIGHT) * height)))
        cv2.ellipse(shade, centre, axes, 0, 0, 360, float(uniform(*SHADE)), thickness=-1)
        if bottom < height - 1 and uniform() < BAND_PROBABILITY:
            band_top = int(uniform(bottom + 1, height))
            shade[band_top:] = np.maximum(shade[band_top:], uniform(*SHADE))

        shade = cv2.GaussianBlur(shade, (0, 0), sigmaX=max(0.5, BLUR * height))
        shade[car] = 0.0
        return {"shade": shade}

    def apply(self, img: np.ndarray, shade: np.ndarray | None = None, **params: Any) -> np.ndarray:
        if shade is None:
            return img
        darkened = img.astype(np.float32) * (1.0 - shade[..., None])
        return np.clip(np.rint(darkened), 0, 255).astype(img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()
