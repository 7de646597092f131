"""Test photos decoded on the device (`predict.py --decode device`).

The loader workers only read each photo's bytes (`read_jpeg`); the main process decodes the
whole batch with one `torchvision.io.decode_jpeg` list call on the model's device (nvJPEG on
CUDA, libjpeg-turbo on the CPU) and makes there what the default CPU path's workers make
(`inference/submit.py: TestPhotos`): each member's network input and, when the recipe
refines, the full-size grey guide. Nothing goes back to the host.

How close to the CPU path: the CPU path decodes in JPEG draft mode (libjpeg's DCT scaling
by 1/2, 1/4 or 1/8, as training read the photos) and area-resizes the rest of the way; here
the photo is decoded at full size and area-resized all the way, with OpenCV's INTER_AREA
arithmetic (`ops/kernels.resize_area`), rounded to whole levels as the CPU path's uint8
resize is, and normalised as `A.Normalize()` does. Where draft mode does not apply (a member
size above half the photo's, e.g. the GPU configs' 640x960 of a 1918x1280 photo) the inputs
agree to rounding (at most 1 level); below it they differ by what DCT scaling does to edges
(about 1 level on average on real photos: `tests/test_device_decode.py`).

The guide is the photo's luma, as `data/layout.read_grey`'s. Two ways, chosen by device
(`GUIDE_FROM`): on the CPU a second decode to the luma plane alone (libjpeg skips the
chroma: faster than weighting the RGB planes, `benchmarks/results/decode_cpu.md`, and the
same bytes as `read_grey`); on CUDA 0.299 R + 0.587 G + 0.114 B of the RGB already decoded,
rounded (one elementwise pass on the device instead of a second nvJPEG decode, whose Huffman
stage runs on the host; `python benchmarks/decode.py --device cuda` compares both).

torchvision's decoders are deprecated since 0.29 (superseded by TorchCodec) and optional:
without them `--decode device` is refused with one line (`decoder()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from carvana_seg.ops.kernels import resize_area
from carvana_seg.data.layout import DataError
from carvana_seg.errors import PipelineError

DECODES = ("cpu", "device")  # where the photos are decoded: loader workers (default), or the model's device
GUIDES = ("gray", "rgb")  # the guide: a second decode to the luma plane, or the luma of the RGB decode
GUIDE_FROM = {"cpu": "gray", "cuda": "rgb"}  # by device type; anything else: "rgb"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # A.Normalize()'s ImageNet statistics, on 0-255 / 255
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as JPEG's Y and OpenCV's RGB->grey


def check_decode(decode: str) -> None:
    """Refuse an unknown `--decode` value, and `device` where torchvision's decoder is missing."""
    if decode not in DECODES:
        raise PipelineError(f"--decode {decode!r}: use one of {', '.join(DECODES)}")
    if decode == "device":
        decoder()


def decoder():
    """`torchvision.io.decode_jpeg` and `ImageReadMode`, or a one-line error saying they are missing."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except (ImportError, OSError, RuntimeError) as err:  # missing, or built for another torch
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PipelineError(f"--decode device needs torchvision.io.decode_jpeg, which cannot be imported here ({reason}); use --decode cpu") from err
    return decode_jpeg, ImageReadMode


def read_jpeg(path: Path) -> torch.Tensor:
    """A photo file's bytes as a 1-D uint8 tensor: all a loader worker does in device mode."""
    try:
        return torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    except OSError as err:
        raise DataError(f"cannot read photo {path}: {err}") from err


def decode(jpegs: Sequence[torch.Tensor], paths: Sequence[Path], device: torch.device, mode: str = "rgb") -> torch.Tensor:
    """Decode same-size JPEGs in one call on `device`: (B, 3, H, W) uint8 for `rgb`, (B, 1, H, W) for `gray`.
    A photo that does not decode is a DataError naming it (found by decoding them one by one)."""
    decode_jpeg, modes = decoder()
    read_mode = modes.RGB if mode == "rgb" else modes.GRAY
    if device.type == "cuda":
        # nvJPEG may write its outputs before the work already queued on this stream has run, into
        # blocks the caching allocator just recycled from that work (pytorch/vision#9606): let it finish
        torch.cuda.current_stream(device).synchronize()
    try:
        images = decode_jpeg(list(jpegs), mode=read_mode, device=device)
    except RuntimeError:
        for jpeg, path in zip(jpegs, paths):  # a list call does not say which photo failed
            try:
                decode_jpeg(jpeg, mode=read_mode, device=device)
            except RuntimeError as err:
                raise DataError(f"cannot decode photo {path}: {str(err).strip().splitlines()[-1]}") from err
        raise
    sizes = {tuple(image.shape[-2:]) for image in images}
    if len(sizes) > 1:
        raise DataError(f"photos of one batch differ in size ({sorted(sizes)}): {', '.join(str(p) for p in paths)}")
    return torch.stack(images)


def network_input(rgb: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, h, w) float32: area-resized, rounded to whole levels, then
    (x - 255 mean) / (255 std) per channel, as `build_transform(train=False)` makes from a uint8 photo."""
    x = resize_area(rgb, hw).round_() if tuple(rgb.shape[-2:]) != tuple(hw) else rgb.float()
    mean = torch.tensor(MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255
    scale = 1 / (torch.tensor(STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255)
    return (x - mean) * scale


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, H, W) uint8 grey: 0.299 R + 0.587 G + 0.114 B, rounded."""
    weights = torch.tensor(LUMA, dtype=torch.float32, device=rgb.device)
    grey = rgb[:, 0] * weights[0] + rgb[:, 1] * weights[1] + rgb[:, 2] * weights[2]
    return grey.round_().clamp_(0, 255).to(torch.uint8)


def device_inputs(
    jpegs: Sequence[torch.Tensor],
    paths: Sequence[Path],
    member_sizes: Sequence[tuple[int, int]],
    with_guide: bool,
    device: torch.device,
    guide_from: str | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """A batch of same-size photos' bytes -> each member's network input and the guide (or None), on `device`.
    `guide_from`: "gray" or "rgb" (default: `GUIDE_FROM` for the device's type)."""
    device = torch.device(device)
    rgb = decode(jpegs, paths, device, "rgb")
    inputs = [network_input(rgb, tuple(hw)) for hw in member_sizes]
    if not with_guide:
        return inputs, None
    how = guide_from or GUIDE_FROM.get(device.type, "rgb")
    if how not in GUIDES:
        raise PipelineError(f"guide_from {how!r}: use one of {', '.join(GUIDES)}")
    guide = decode(jpegs, paths, device, "gray")[:, 0] if how == "gray" else luma(rgb)
    return inputs, guide
