"""segmentation-models-pytorch baselines behind the same interface as the custom U-Net.

Most smp architectures reject inputs whose sides are not multiples of the encoder's
output stride (Carvana's 1918 is not a multiple of 32). The wrapper pads the bottom and
right edges up to that multiple and crops the logits back, so every model accepts any
H x W. smp is imported lazily: building a custom U-Net should not pay for importing it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carvana_seg.config import ConfigError, ModelConfig, SmpConfig, local_encoder_weights
from carvana_seg.models.encoder_weights import check_encoder_file, load_encoder_weights
from carvana_seg.models.registry import register_model


def _check_names(arch: str, encoder: str) -> None:
    """Turn smp's KeyError or timm's RuntimeError for a bad name into a ConfigError listing options."""
    import segmentation_models_pytorch as smp
    import timm

    architectures = {cls.__name__.lower(): cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
    if arch.lower() not in architectures:
        raise ConfigError(f"unknown model.arch {arch!r}; available: {', '.join(architectures.values())}")
    if encoder.startswith("tu-"):
        if not timm.is_model(encoder[3:]):
            raise ConfigError(f"unknown timm encoder {encoder[3:]!r} in model.encoder; see timm.list_models()")
    elif encoder not in smp.encoders.get_encoder_names():
        raise ConfigError(
            f"unknown model.encoder {encoder!r}; use 'tu-<timm model name>' or one of: "
            + ", ".join(smp.encoders.get_encoder_names())
        )


def _check_download_name(encoder: str, weights: str) -> None:
    """A weight set smp downloads must be one it knows for this encoder (a `tu-` encoder takes
    any: timm picks its default pretrained tag); else one line listing them, not smp's KeyError."""
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-") or smp.encoders.is_equivalent_to_timm_universal(encoder):
        return
    known = smp.encoders.encoders[encoder]["pretrained_settings"]
    if weights not in known:
        raise ConfigError(
            f"model.encoder_weights: {weights!r} is neither a weight set smp downloads for {encoder!r} ({', '.join(known) or 'none'}) "
            "nor a local file (a path to a .safetensors file or a folder, e.g. ./weights/enc.safetensors)"
        )


def check_encoder_weights(cfg: ModelConfig) -> None:
    """What building `cfg` would refuse about its smp names and `model.encoder_weights`, found
    without downloading or loading weights (a run checks this before it writes anything): an
    unknown arch, encoder or weight set, and a local file's name, header, keys and shapes
    against the encoder (built on the meta device: no memory). Other families: nothing to check."""
    if not isinstance(cfg, SmpConfig):
        return
    import segmentation_models_pytorch as smp

    _check_names(cfg.arch, cfg.encoder)
    if cfg.encoder_weights is None:
        return
    if not local_encoder_weights(cfg.encoder_weights):
        _check_download_name(cfg.encoder, cfg.encoder_weights)
        return
    with torch.device("meta"):
        skeleton = smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=None, in_channels=cfg.channels, classes=cfg.classes)
    expected = {k: tuple(v.shape) for k, v in skeleton.encoder.state_dict().items()}
    check_encoder_file(expected, cfg.encoder_weights, cfg.encoder)


class PaddedSmpModel(nn.Module):
    """An smp model that takes any H x W: pad to the encoder's stride, crop the logits back."""

    def __init__(
        self, arch: str, encoder: str, encoder_weights: str | None, in_channels: int, classes: int
    ) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        _check_names(arch, encoder)
        local = local_encoder_weights(encoder_weights)
        if encoder_weights is not None and not local:
            _check_download_name(encoder, encoder_weights)
        self.model = smp.create_model(
            arch, encoder_name=encoder, encoder_weights=None if local else encoder_weights, in_channels=in_channels, classes=classes
        )
        if local:  # from disk, not downloaded
            load_encoder_weights(self.model.encoder, encoder_weights, encoder)
        # The same condition smp's own check_input_shape applies.
        self.divisor = self.model.encoder.output_stride if self.model.requires_divisible_input_shape else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.divisor, -width % self.divisor
        if pad_h or pad_w:
            # Reflection keeps image statistics at the border; it needs pad < side, tiny inputs replicate.
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.model(x)[..., :height, :width]


@register_model("smp")
def smp_model(cfg: SmpConfig) -> PaddedSmpModel:
    return PaddedSmpModel(cfg.arch, cfg.encoder, cfg.encoder_weights, cfg.channels, cfg.classes)
