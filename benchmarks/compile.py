"""Is `train.compile=true` worth it on this CPU? Eager vs torch.compile training steps.

    python benchmarks/compile.py [--config configs/carvana_cpu/unet_res_192_fast.yaml] [--rounds 3] [--steps 4]

Both models are built from the config (same weights), then trained in alternating rounds of
`--steps` steps each (forward, BCE+Dice, backward, AdamW) on a fixed random batch at the
config's size, batch size and memory format, so a slow spell on this shared machine hits
both. Reported: the one-off compile time (the first compiled step) and the median step time
of each, whose ratio is the speed-up a fold gets once compiled.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_result  # noqa: E402

from carvana_seg.config import load_config  # noqa: E402
from carvana_seg.models import build_model  # noqa: E402
from carvana_seg.models.describe import describe_model  # noqa: E402
from carvana_seg.training.losses import build_loss  # noqa: E402


def timed_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn, images: torch.Tensor, masks: torch.Tensor, steps: int) -> list[float]:
    """Seconds per training step, one entry per step."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = loss_fn(model(images).float(), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "carvana_cpu" / "unet_res_192_fast.yaml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    cfg = load_config(args.config)
    torch.manual_seed(cfg.train.seed)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    images = torch.randn(cfg.train.batch_size, cfg.model.in_channels, *cfg.data.size).contiguous(memory_format=memory_format)
    masks = (torch.rand(cfg.train.batch_size, 1, *cfg.data.size) > 0.5).float()
    loss_fn = build_loss(cfg.train.loss)
    eager = build_model(cfg.model).to(memory_format=memory_format).train()
    twin = build_model(cfg.model).to(memory_format=memory_format).train()
    twin.load_state_dict(eager.state_dict())
    runs = {
        "eager": (eager, torch.optim.AdamW(eager.parameters(), lr=cfg.train.lr)),
        "compiled": (torch.compile(twin), torch.optim.AdamW(twin.parameters(), lr=cfg.train.lr)),
    }

    timed_steps(*runs["eager"], loss_fn, images, masks, 1)  # warm-up
    compile_seconds = timed_steps(*runs["compiled"], loss_fn, images, masks, 1)[0]
    step_times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (model, optimizer) in runs.items():
            step_times[name] += timed_steps(model, optimizer, loss_fn, images, masks, args.steps)

    median = {name: statistics.median(times) for name, times in step_times.items()}
    rows = [
        f"| {name} | {median[name]:.3f} | {cfg.train.batch_size / median[name]:.2f} | {min(times):.3f} | {max(times):.3f} |"
        for name, times in step_times.items()
    ]
    body = f"""
Config `{Path(args.config).resolve().relative_to(REPO).as_posix()}`: {describe_model(cfg)},
{cfg.data.size}, batch {cfg.train.batch_size}, {cfg.train.loss}, channels_last={cfg.train.channels_last}.
{args.rounds} alternating rounds of {args.steps} steps each; the first compiled step (the compile) took
**{compile_seconds:.0f} s** and is not in the table.

| mode | median s/step | images/s | fastest s/step | slowest s/step |
| --- | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

Speed-up once compiled: **{median['eager'] / median['compiled']:.2f}x** (median step times).
"""
    write_result("compile", "torch.compile vs eager training steps", body)


if __name__ == "__main__":
    main()
