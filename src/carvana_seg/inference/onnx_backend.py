"""The fold networks as ONNX files, run by onnxruntime in place of torch.

Why: a notebook or server without this repo's torch stack (or with a faster runtime) can
run the same recipe chain; only the network changes, so `predict.py --backend onnxruntime`
blends, upsamples, refines and encodes exactly as the torch backend does.

Export uses torch's TorchScript-based exporter (`dynamo=False`: the torch.export one needs
onnxscript as well, and traces the same graph here). Batch, height and width are dynamic,
but a shape test inside the model (the pixel-shuffle U-Net pads sides that are not multiples
of its cell) is frozen by tracing, so the export is checked against torch, with onnxruntime,
at every size the recipe feeds the network: the training size and each TTA scale of it. A
fold whose probabilities differ by more than ONNX_TOLERANCE is refused, naming the file.
onnxruntime runs in fp32 (the torch backend autocasts on a GPU when trained in bf16/fp16).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from carvana_seg.config import Config
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.recipe.tta import SCALE_VIEW
from carvana_seg.errors import PipelineError

OPSET = 17
ONNX_TOLERANCE = 1e-4  # max abs difference of probabilities (fp32) between torch and onnxruntime
CHECK_BATCHES = (1, 3)  # batch sizes checked at the training size (the batch axis is dynamic)
INSTALL_HINT = "pip install onnx==1.23.2 onnxruntime==1.32.0 (pinned in requirements.txt)"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise PipelineError(f"the onnxruntime backend needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


def _check_onnx_installed() -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter writes the file with it)
    except ImportError:
        raise PipelineError(f"ONNX export needs onnx: {INSTALL_HINT}") from None


def onnx_path(cfg: Config, fold: int) -> Path:
    """The fold's ONNX file; a missing one is an error that says how to make it."""
    path = ExperimentPaths.of(cfg).onnx(fold)
    if not path.is_file():
        raise PipelineError(f"{cfg.exp.name} fold {fold}: no ONNX model at {path}: export the bundle with scripts/export.py --onnx")
    return path


def view_sizes(hw: tuple[int, int], views: list[str]) -> list[tuple[int, int]]:
    """The input sizes the network sees under these TTA views (F.interpolate floors scale * side)."""
    sizes = [hw]
    for view in views:
        match = SCALE_VIEW.match(view)
        if match:
            size = (math.floor(hw[0] * float(match[1])), math.floor(hw[1] * float(match[1])))
            if size not in sizes:
                sizes.append(size)
    return sizes


class OnnxModel(torch.nn.Module):
    """An onnxruntime session behind the torch model interface: images in, logits out, on the
    images' device (via host memory), so `predict_probs` and the chain need no change."""

    def __init__(self, path: str | Path, device: torch.device | None = None) -> None:
        super().__init__()
        ort = _onnxruntime()
        wanted = ["CUDAExecutionProvider"] if device is not None and device.type == "cuda" else []
        providers = [p for p in wanted if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch would use
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0]).to(images.device)


def load_onnx_fold(path: Path, device: torch.device) -> OnnxModel:
    return OnnxModel(path, device).eval()


def export_onnx(model: torch.nn.Module, path: Path, sizes: list[tuple[int, int]], seed: int = 0, channels: int = 3) -> float:
    """Write `model` (fp32, CPU) to `path` as ONNX and return the max abs difference of its
    probabilities from torch's on random inputs of `channels` at each size (batches 1 and 3 at
    the first, 2 at the others); above ONNX_TOLERANCE, or failing to run at a size, is an error
    naming `path`."""
    _check_onnx_installed()
    model = model.float().cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(1, channels, *sizes[0], generator=generator)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():  # the tracer's notes on frozen shape tests: the check below is what counts
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=OPSET,
            input_names=["images"], output_names=["logits"], dynamic_axes={"images": axes, "logits": axes},
        )
    session = OnnxModel(path)
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException
    inputs = [torch.randn(b, channels, *sizes[0], generator=generator) for b in CHECK_BATCHES]
    inputs += [torch.randn(2, channels, *hw, generator=generator) for hw in sizes[1:]]
    worst = 0.0
    for images in inputs:
        with torch.no_grad():
            expected = torch.sigmoid(model(images))
        try:
            got = torch.sigmoid(session(images))
        except (Fail, InvalidArgument, RuntimeException) as err:  # e.g. a shape frozen by tracing
            raise PipelineError(f"{path}: onnxruntime cannot run the exported model at {tuple(images.shape)}: {str(err).splitlines()[0]}") from None
        worst = max(worst, (got - expected).abs().max().item())
    if not worst <= ONNX_TOLERANCE:
        raise PipelineError(f"{path}: onnxruntime's probabilities differ from torch's by {worst:.2e} (> {ONNX_TOLERANCE:g})")
    return worst
