"""Look before you read: the lowest-Dice OOF images with their errors painted on."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import torch  # noqa: E402

from carvana_seg.recipe.chain import probability_levels  # noqa: E402
from carvana_seg.recipe.recipe import Recipe  # noqa: E402
from carvana_seg.data.layouts import open_layout  # noqa: E402
from carvana_seg.io_utils import atomic_path  # noqa: E402

WORST_COUNT = 12
TILE_WIDTH = 480
COLOURS = {"true positive": (0, 200, 0), "false positive": (255, 0, 0), "false negative": (0, 80, 255)}
ALPHA = 0.5


def overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Paint TP / FP / FN pixels over the photo in three colours."""
    out = image.astype(np.float32)
    for (name, colour), region in zip(COLOURS.items(), (pred & truth, pred & ~truth, ~pred & truth)):
        out[region] = (1 - ALPHA) * out[region] + ALPHA * np.array(colour, np.float32)
    return out.astype(np.uint8)


def plot_worst(member, per_image_dice: np.ndarray, threshold: float, path: Path, count: int = WORST_COUNT) -> None:
    """Save a grid of the `count` lowest-Dice images, judged at original resolution (each OOF map
    upsampled by the experiment's one-model recipe, as its score was)."""
    layout = open_layout(member.cfg.data)
    recipe = Recipe.single(member.exp, member.cfg.exp.runs_dir, member.cfg.data.folds, member.cfg.data.root)
    oof = member.oof
    worst = np.argsort(per_image_dice, kind="stable")[:count]
    columns = 4
    rows = int(np.ceil(len(worst) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.9 * rows), squeeze=False)
    level = int(round(threshold * 255))
    for ax, i in zip(axes.flat, worst):
        image_id = str(oof.ids[i])
        size = tuple(int(s) for s in oof.original_sizes[i])
        truth = layout.read_mask(image_id, size).astype(bool)
        pred = probability_levels(recipe, [torch.from_numpy(oof.probs[i : i + 1])], size)[0].numpy() >= level
        photo = layout.read_photo(layout.image_path(image_id))
        painted = overlay(np.repeat(photo, 3, axis=2) if photo.shape[2] == 1 else photo, pred, truth)
        height = int(TILE_WIDTH * size[0] / size[1])
        ax.imshow(cv2.resize(painted, (TILE_WIDTH, height), interpolation=cv2.INTER_AREA))
        ax.set_title(f"{image_id}  Dice {per_image_dice[i]:.4f}", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(c) / 255) for c in COLOURS.values()]
    fig.legend(handles, list(COLOURS), loc="lower center", ncol=3)
    fig.suptitle(f"{member.exp}: the {len(worst)} lowest-Dice OOF images (threshold {threshold:.3f})")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=72, format="png")
    plt.close(fig)
