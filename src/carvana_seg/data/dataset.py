"""PyTorch Dataset over a resized source, with albumentations pipelines."""

from __future__ import annotations

from typing import Protocol

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset

from carvana_seg.data.floor import DarkenFloor
from carvana_seg.data.sources import HALF_COVERED

# Augmentation strengths: small geometric jitter, as the cars are centred on a turntable.
SHIFT, SCALE, ROTATE_DEG = 0.0625, 0.1, 5.0
BRIGHTNESS = CONTRAST = SATURATION = 0.2
HUE = 0.02
GREY_MEAN, GREY_STD = 0.449, 0.226  # ImageNet's mean and std averaged over RGB, for grey images


class ResizedSource(Protocol):
    ids: list[str]
    hw: tuple[int, int]
    channels: int  # 1 grey, 3 RGB

    def __len__(self) -> int: ...
    def original_size(self, index: int) -> tuple[int, int]: ...
    def get(self, index: int) -> tuple[np.ndarray, np.ndarray | None]: ...  # image, mask coverage 0-255


def build_transform(train: bool, darken_floor: float = 0.0, soft_masks: bool = False, channels: int = 3) -> A.Compose:
    """Train: floor darkening (with probability `darken_floor`, RGB only), flip, small
    shift/scale/rotate, colour jitter (brightness and contrast for grey images). Validation
    and test: none. Soft masks are resampled bilinearly, so a shifted outline keeps its
    sub-pixel position. Grey (HxWx1) images are normalised by one mean and std."""
    steps: list[A.BasicTransform] = []
    if train:
        if darken_floor > 0 and channels == 3:
            steps.append(DarkenFloor(p=darken_floor))
        steps += [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                translate_percent=(-SHIFT, SHIFT),
                scale=(1 - SCALE, 1 + SCALE),
                rotate=(-ROTATE_DEG, ROTATE_DEG),
                border_mode=cv2.BORDER_REFLECT_101,
                mask_interpolation=cv2.INTER_LINEAR if soft_masks else cv2.INTER_NEAREST,
                p=0.5,
            ),
            A.ColorJitter(brightness=BRIGHTNESS, contrast=CONTRAST, saturation=SATURATION, hue=HUE, p=0.5)
            if channels == 3 else A.RandomBrightnessContrast(brightness_limit=BRIGHTNESS, contrast_limit=CONTRAST, p=0.5),
        ]
    steps += [A.Normalize() if channels == 3 else A.Normalize(mean=(GREY_MEAN,), std=(GREY_STD,)), ToTensorV2()]
    return A.Compose(steps)


class SegmentationDataset(Dataset):
    """Samples `{image, mask, index, id}`; `index` is the position in the source, so
    predictions gathered across processes can be put back in place.

    The mask is the car's coverage of each pixel (0-1) with `soft_masks`, else 0/1 (at
    least half covered). A training sample's augmentation is seeded from (seed, epoch, index): reproducible
    whatever the number of workers or processes, identical after a resume, and different
    across samples (so across processes under DDP) and epochs.
    """

    def __init__(
        self,
        source: ResizedSource,
        indices: list[int] | np.ndarray,
        train: bool,
        seed: int = 0,
        darken_floor: float = 0.0,
        soft_masks: bool = False,
    ):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.train = train
        self.soft_masks = soft_masks
        self.transform = build_transform(train, darken_floor, soft_masks, source.channels)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch's iterator is created (workers copy the dataset then)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict:
        index = int(self.indices[item])
        image, mask = self.source.get(index)
        if self.train:
            sample_seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
            self.transform.set_random_seed(int(sample_seed))
        if mask is None:
            out = self.transform(image=image)
            sample = {"image": out["image"]}
        else:
            out = self.transform(image=image, mask=mask)
            coverage = out["mask"].unsqueeze(0)
            target = coverage.float() / 255 if self.soft_masks else (coverage >= HALF_COVERED).float()
            sample = {"image": out["image"], "mask": target}
        sample.update(index=torch.tensor(index), id=self.source.ids[index])
        return sample
