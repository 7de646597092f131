"""A model's short name from its config ("U-Net res b32 d4 shuffle2", "smp FPN resnet18"):
what the leaderboard's model column and a run's plan line call it."""

from __future__ import annotations

from carvana_seg.config import Config, SmpConfig, UNetConfig


def describe_model(cfg: Config) -> str:
    m = cfg.model
    if isinstance(m, UNetConfig):
        options = (f" {m.upsample}" if m.upsample != "transpose" else "") + (f" shuffle{m.pixel_shuffle}" if m.pixel_shuffle > 1 else "")
        return f"U-Net {m.block} b{m.base_channels} d{m.depth}" + options
    if isinstance(m, SmpConfig):
        return f"smp {m.arch} {m.encoder}"
    return m.name
