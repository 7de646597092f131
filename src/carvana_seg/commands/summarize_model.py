"""Print a model's layer table, `Total params` and mult-adds (torchinfo) and its forward GFLOPs.

    python scripts/summarize_model.py --config configs/demo/unet_res.yaml --input-size 3x96x144
    python scripts/summarize_model.py --config configs/carvana_cpu/unet_res_256_shuffle.yaml
    python scripts/summarize_model.py --config configs/demo/unet_plain.yaml model.block=se model.base_channels=32

Without --input-size the model is summarized at model.in_channels x data.size.

Manual: docs/training.md
"""

from __future__ import annotations

import argparse

from carvana_seg.commands.cli import command_parser
from carvana_seg.config import load_config, parse_size
from carvana_seg.models import build_model
from carvana_seg.models.stats import summarize


def parse_input_size(text: str) -> tuple[int, int, int]:
    channels, _, size = text.partition("x")
    if not channels.isdigit() or int(channels) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW (e.g. 3x320x480), got {text!r}")
    return (int(channels), *parse_size(size, "--input-size"))


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--config", help="YAML preset (defaults if omitted)")
    parser.add_argument("--input-size", type=parse_input_size, help="CxHxW, default model.in_channels x data.size")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. model.block=se")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    input_size = args.input_size or (cfg.model.channels, *cfg.data.size)
    if input_size[0] != cfg.model.channels:
        parser.error(f"--input-size has {input_size[0]} channels but model.in_channels={cfg.model.channels}")
    print(summarize(build_model(cfg.model), (1, *input_size)))
