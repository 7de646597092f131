"""The prediction chain on CUDA tensors against the same chain on CPU tensors (OpenCV kernels).

What tests/test_chain.py checks with the torch kernels on CPU tensors, here on the GPU itself:
each full-resolution kernel (bilinear and area resizing, box mean, the guided filter's
multiply-add, rounding to levels) at 1280x1918, then the whole chain (blend, upsample, guided
filter, threshold, run boundaries, largest component + fill holes) on 8 synthetic full-size
photos with plausible soft maps at 256x384. Float rounding may flip a pixel whose level sits on
the threshold, nothing more: the check prints the largest kernel differences, the differing
pixels and the per-photo Dice, and exits 1 when a kernel is off by more than the tests'
tolerance (1e-4) or a photo's Dice is under 0.9999. Run by benchmarks/gpu/run.sh.

    python benchmarks/gpu/cuda_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np
import torch

from carvana_seg.ops import kernels
from carvana_seg.recipe.chain import finish, thresholded_runs
from carvana_seg.recipe.recipe import Member, Recipe, Refine

SIZE = (1280, 1918)


def check_kernels(device: torch.device) -> list[str]:
    """The largest difference of each kernel, on `device` (torch) against OpenCV on the CPU."""
    rng = torch.Generator().manual_seed(0)
    small = torch.rand(2, 3, SIZE[0] // 4, SIZE[1] // 4, generator=rng)
    full = torch.rand(2, *SIZE, generator=rng)
    half = (SIZE[0] // 2, SIZE[1] // 2)
    photo = (full * 255).to(torch.uint8)
    a, b = torch.rand(2, *SIZE, generator=rng) * 2 - 0.5, torch.rand(2, *SIZE, generator=rng) * 100 - 20
    on = lambda x: x.clone().to(device)  # noqa: E731  (a copy: multiply_add and quantize write into their input)
    pairs = {
        "resize_bilinear": (kernels.resize_bilinear(on(small), SIZE, "torch"), kernels.resize_bilinear(small, SIZE, "opencv")),
        "resize_area": (kernels.resize_area(on(full), half, "torch"), kernels.resize_area(full, half, "opencv")),
        "resize_area_fractional": (kernels.resize_area(on(full), (640, 960), "torch"), kernels.resize_area(full, (640, 960), "opencv")),  # --decode device's 1918 -> 960 (a matmul)
        "box_mean": (kernels.box_mean(on(full), 9, "torch"), kernels.box_mean(full, 9, "opencv")),
        "multiply_add": (kernels.multiply_add(on(a), on(photo), on(b), "torch"), kernels.multiply_add(a.clone(), photo, b, "opencv")),
    }
    failures = []
    for name, (got, want) in pairs.items():
        got, want = got.cpu().float(), want.float()
        if got.shape != want.shape:
            print(f"kernel {name:16s} OFF: shape {tuple(got.shape)} on {device}, {tuple(want.shape)} from OpenCV")
            failures.append(name)
            continue
        diff = (got - want).abs()
        rtol = 1e-6 if name == "multiply_add" else 0.0  # tests/test_chain.py's tolerances: atol 1e-4 (a level is 1/255), rtol 1e-6 for a * photo + b
        ok = bool((diff <= 1e-4 + rtol * want.abs()).all())
        diff = diff.max().item()
        print(f"kernel {name:16s} {tuple(got.shape)} on {device}: max |torch - opencv| = {diff:.2e}  {'ok' if ok else 'OFF'}")
        if not ok:
            failures.append(name)
    values = torch.rand(4, *SIZE, generator=rng) * 300 - 20
    same = torch.equal(kernels.quantize(on(values.clone()), "torch").cpu(), kernels.quantize(values.clone(), "opencv"))
    print(f"kernel quantize         levels equal: {same}")
    if not same:
        failures.append("quantize")
    return failures


def photos_and_truth(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Ellipse 'cars' of varying size on a noisy background, as uint8 grey photos and masks."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    truth = np.stack([
        (((yy / SIZE[0] - 0.5) / r) ** 2 + ((xx / SIZE[1] - 0.5) / (r * 1.4)) ** 2 < 1).astype(np.uint8)
        for r in (0.2 + 0.05 * (k % 4) for k in range(count))
    ])
    photos = (np.where(truth, 60, 200) + rng.integers(0, 40, truth.shape)).astype(np.uint8)
    return photos, truth


def soft_maps(truth: np.ndarray, hw: tuple[int, int], seed: int) -> np.ndarray:
    """A plausible model output at training size: the coverage, blurred and noised, as uint8 levels (tests/test_chain.py)."""
    rng = np.random.default_rng(seed)
    coverage = np.stack([cv2.resize(t.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_AREA) for t in truth])
    coverage = np.stack([cv2.GaussianBlur(c, (5, 5), 1.0) for c in coverage]) + rng.normal(0, 0.03, coverage.shape)
    return np.clip(np.rint(coverage * 255), 0, 255).astype(np.uint8)


def check_chain(device: torch.device, count: int = 8) -> bool:
    photos, truth = photos_and_truth(count)
    maps = [soft_maps(truth, (256, 384), 0), soft_maps(truth, (192, 288), 1)]
    members = (Member("m0", "runs", 0.7, 1), Member("m1", "runs", 0.3, 1))
    recipe = Recipe("cuda_check", members, "data", threshold_level=120, refine=Refine(8, 3e-4), postprocess=("largest_component", "fill_holes"))
    masks = {}
    for name, dev, backend in (("cpu", torch.device("cpu"), "opencv"), (device.type, device, "torch")):
        kernels.BACKEND = backend  # the CPU reference on OpenCV; the device on the torch kernels (what "auto" picks on CUDA)
        start = time.perf_counter()
        runs = thresholded_runs(recipe, [torch.from_numpy(m).to(dev) for m in maps], SIZE, torch.from_numpy(photos).to(dev))
        masks[name] = np.stack([finish(recipe, r).to_mask() for r in runs])
        print(f"chain on {name}: {count} photos of {SIZE[1]}x{SIZE[0]} in {time.perf_counter() - start:.2f} s (first call, warm-up included)")
    cpu, dev = masks["cpu"].astype(bool), masks[device.type].astype(bool)
    differ = (cpu != dev).sum(axis=(1, 2))
    dice = 2 * (cpu & dev).sum(axis=(1, 2)) / np.maximum(cpu.sum(axis=(1, 2)) + dev.sum(axis=(1, 2)), 1)
    print(f"chain {device.type} vs cpu: differing pixels per photo {differ.tolist()}; Dice min {dice.min():.7f}; vs truth (cpu) Dice min "
          f"{(2 * (cpu & truth.astype(bool)).sum(axis=(1, 2)) / (cpu.sum(axis=(1, 2)) + truth.sum(axis=(1, 2)))).min():.5f}")
    return bool(cpu.any()) and not bool(cpu.all()) and dice.min() >= 0.9999


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="where the torch kernels run (cpu: the torch kernels on CPU tensors)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}, TF32 matmul allowed: {torch.backends.cuda.matmul.allow_tf32}")
    failures = check_kernels(device)
    chain_ok = check_chain(device)
    print("cuda_check:", "PASS" if not failures and chain_ok else f"FAIL (kernels off: {failures or 'none'}; chain within Dice 0.9999: {chain_ok})")
    sys.exit(0 if not failures and chain_ok else 1)


if __name__ == "__main__":
    main()
