"""Every model is built by name from `cfg.model`; importing this package registers them all."""

from carvana_seg.models import smp_models, unet  # noqa: F401  (registers "smp" and "unet")
from carvana_seg.models.checkpoint import load_checkpoint, save_checkpoint
from carvana_seg.models.registry import available_models, build_model, register_model
from carvana_seg.models.smp_models import check_encoder_weights

__all__ = ["available_models", "build_model", "check_encoder_weights", "load_checkpoint", "register_model", "save_checkpoint"]
