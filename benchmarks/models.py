"""Measure the default ablation set: size, FLOPs, training throughput and peak memory on this CPU.

    python benchmarks/models.py [--steps 3] [--threads 1] [--out benchmarks/results/models.md]

Each (model, input size, memory format) runs in a fresh subprocess, so its peak resident
memory (getrusage maxrss) is its own and not the high-water mark of an earlier case.
A step is forward + BCE-with-logits + backward in training mode at batch 4; after one
untimed warm-up step, images/s comes from the fastest timed step: other jobs share this
CPU, and the fastest step is the one they slowed least. GFLOPs are per image, forward
only, counted by torch.utils.flop_counter on a meta-device copy of the model.

One thread by default: on this shared 2-core machine, 2 threads while another job holds
a core stall at every OpenMP barrier and their figures swing widely (docs/benchmarks.md);
comparisons need the stable setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from carvana_seg.config import load_config
from carvana_seg.io_utils import atomic_write_text
from carvana_seg.models import build_model
from carvana_seg.models.stats import count_parameters, forward_flops

REPO = Path(__file__).resolve().parents[1]
BATCH = 4
SIZES = ("320x480", "160x240")  # the demo training size (data.size default) and its half
# label -> config overrides; the custom U-Nets differ only in their block
ABLATION = {
    "unet plain b16": ["model.block=plain", "model.base_channels=16"],
    "unet se b16": ["model.block=se", "model.base_channels=16"],
    "unet res b16": ["model.block=res", "model.base_channels=16"],
    "smp Unet resnet18": ["model.name=smp", "model.arch=Unet", "model.encoder=resnet18"],
}


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(overrides: list[str], size: str, channels_last: bool, steps: int, threads: int) -> dict:
    """One case, in this process: parameters, GFLOPs, images/s and peak memory of training steps."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(None, [*overrides, f"data.size={size}"])
    shape = (BATCH, cfg.model.in_channels, *cfg.data.size)
    with torch.device("meta"):
        meta_model = build_model(cfg.model)
    model = build_model(cfg.model).train()
    x = torch.randn(shape)
    target = (torch.rand(BATCH, cfg.model.classes, *cfg.data.size) > 0.5).float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()

    idle_rss = _max_rss_mib()
    step()  # warm-up: allocator and oneDNN primitive caches
    step_seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        step_seconds.append(time.perf_counter() - start)
    return {
        "params": count_parameters(meta_model),
        "gflops": forward_flops(meta_model, (1, *shape[1:])) / 1e9,
        "images_per_s": BATCH / min(step_seconds),
        "idle_rss_mib": idle_rss,
        "peak_rss_mib": _max_rss_mib(),
    }


def run_case(label: str, size: str, channels_last: bool, steps: int, threads: int) -> dict:
    """Run `measure` in a fresh interpreter and return its JSON result."""
    job = json.dumps([ABLATION[label], size, channels_last, steps, threads])
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", job], capture_output=True, text=True, check=False, cwd=REPO
    )
    if proc.returncode:
        raise RuntimeError(f"benchmark case {label} {size} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def render(rows: list[dict], command: str, steps: int, threads: int, seconds: float, load: tuple[float, float]) -> str:
    lines = [
        "# Model benchmark",
        "",
        f"Produced by `{command}` in {seconds:.0f} s "
        f"(1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), no GPU; "
        f"torch {torch.__version__}, torch threads: {threads} (why: the benchmark's docstring). "
        f"Each cell is ONE run (best of {steps} timed steps) on a shared, noisy CPU where other jobs may be "
        "running (see the load average): read differences under ~25% as noise.",
        "",
        f"Training step = forward + BCE + backward, batch {BATCH}, after one warm-up step; "
        "img/s = images per second in the fastest timed step. "
        "GFLOPs = forward FLOPs per image at that size (torch.utils.flop_counter, 2 per multiply-add). "
        "Peak RSS = the subprocess's maxrss (torch, model, activations and gradients); "
        "the step's share is peak minus the RSS before the first step.",
        "",
        "| model | size | params | GFLOPs/img | img/s contiguous | img/s channels_last | s / 1000 img (best) "
        "| peak RSS MiB contiguous | peak RSS MiB channels_last | step's share MiB (best) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        contiguous, channels_last = row["contiguous"], row["channels_last"]
        best = max(contiguous, channels_last, key=lambda r: r["images_per_s"])
        lines.append(
            f"| {row['label']} | {row['size']} | {contiguous['params']:,} | {contiguous['gflops']:.2f} "
            f"| {contiguous['images_per_s']:.2f} | {channels_last['images_per_s']:.2f} "
            f"| {1000 / best['images_per_s']:.0f} "
            f"| {contiguous['peak_rss_mib']:.0f} | {channels_last['peak_rss_mib']:.0f} "
            f"| {best['peak_rss_mib'] - best['idle_rss_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per case")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see the module docstring)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "models.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one case as JSON
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(*json.loads(args.worker))))
        return

    start, load_at_start = time.perf_counter(), os.getloadavg()[0]
    rows = []
    for label in ABLATION:
        for size in SIZES:
            row = {"label": label, "size": size}
            for fmt, channels_last in (("contiguous", False), ("channels_last", True)):
                row[fmt] = run_case(label, size, channels_last, args.steps, args.threads)
                print(f"{label:20s} {size:8s} {fmt:14s} {row[fmt]['images_per_s']:6.2f} img/s", flush=True)
            rows.append(row)
    command = " ".join(["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    load = (load_at_start, os.getloadavg()[0])
    atomic_write_text(args.out, render(rows, command, args.steps, args.threads, time.perf_counter() - start, load))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
