"""One place that maps `model.name` to a constructor (the timm pattern).

A constructor takes its family's settings (the `ModelConfig` subclass that
`config.MODEL_FAMILIES` pairs with its name) and returns an `nn.Module` whose forward maps
B x in_channels x H x W to logits B x classes x H x W for any H, W, so the trainer
never needs to know which architecture it holds.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from carvana_seg.config import MODEL_FAMILIES, ModelConfig

ModelFactory = Callable[[ModelConfig], nn.Module]

_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: make `fn(cfg: ModelConfig) -> nn.Module` buildable as `model.name=<name>`."""

    def decorator(fn: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered by {_MODELS[name].__module__}")
        _MODELS[name] = fn
        return fn

    return decorator


def available_models() -> list[str]:
    return sorted(_MODELS)


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model `cfg.name` names; an unknown name lists the available ones."""
    if cfg.name not in _MODELS:
        raise ValueError(f"unknown model.name {cfg.name!r}; available: {', '.join(available_models())}")
    family = MODEL_FAMILIES.get(cfg.name)
    if family is not None and not isinstance(cfg, family):
        raise ValueError(f"model.name={cfg.name} is built from {family.__name__} settings, not {type(cfg).__name__}")
    return _MODELS[cfg.name](cfg)
