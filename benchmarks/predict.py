"""Test-set prediction, the old per-photo chain against the new batched one, in one run.

Two recipe shapes on synthetic 1918x1280 test photos (100 distinct ones, linked round-robin,
so every photo is decoded from disk as in a real run):

- `tiny`: the tiny U-Net of configs/tiny.yaml (2 folds, 64x96, 1 epoch on synthetic data),
  hflip TTA, forced to refine edges (guided r8 eps 3e-4) and post-process (largest component
  + fill holes). The network is cheap, so this measures mostly the chain around it. The
  figure it reports: the marginal cost of 128 more photos (predict N+128 minus predict N,
  so start-up cancels) against decoding those 128 photos at full size once in one thread.
- `real`: the real-data recipe's shape: configs/carvana_cpu/unet_res_256_shuffle.yaml
  (untrained weights: speed only), 4 folds x 3 views (hflip, scale1.25), refinement and
  post-processing.

Each prediction runs in a fresh subprocess (its own peak RSS), each configuration
`--repeats` times, interleaved, the fastest counting (start-up alone varies on a shared
machine). `old` is the chain before recipe/chain.py (benchmarks/old_chain.py,
driven the way the old predict.py drove it: per photo in a thread pool, the photo decoded a
second time for the guide). A stage split follows: each chain's stages timed one at a time
in one process on 16 photos, so the pipelined totals can be read against where the time goes.
Counts other than the default go to their own result file (`predict_<shape>_<device>_<counts>.md`).

    python benchmarks/predict.py [--shape tiny|real] [--counts 32 160] [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_result  # noqa: E402

DISTINCT = 100


def prepare(work: Path, shape: str) -> Path:
    """Synthetic data, the experiment of `shape` and its recipe; returns the recipe path."""
    import torch

    from carvana_seg.config import load_config, save_config
    from carvana_seg.data.folds import make_folds, write_folds
    from carvana_seg.data.layout import CarvanaLayout
    from carvana_seg.data.synthetic import generate
    from carvana_seg.recipe.tune import tune
    from carvana_seg.models import build_model, save_checkpoint
    from carvana_seg.recipe.recipe import Member, Recipe, Refine
    from carvana_seg.training.cv import train_experiments

    data = generate(work / "data", cars=4, test_cars=7, seed=1)  # 7 x 16 = 112 test photos
    common = [f"data.root={data}", f"data.cache_dir={work / 'cache'}", f"exp.runs_dir={work / 'runs'}", f"exp.oof_dir={work / 'oof'}", "exp.name=bench"]
    steps = ("largest_component", "fill_holes")
    if shape == "tiny":
        write_folds(make_folds(CarvanaLayout(data), 2, seed=0), data / "folds.csv")
        cfg = load_config(REPO / "configs" / "tiny.yaml", [*common, f"data.folds_file={data / 'folds.csv'}", "train.epochs=1"])
        train_experiments([cfg])
        recipe = tune(["bench"], work / "runs", tta="hflip", name="bench", out_dir=work / "submissions")
        recipe = recipe.replace(refine=Refine(8, 3e-4), postprocess=steps)
    else:
        cfg = load_config(REPO / "configs" / "carvana_cpu" / "unet_res_256_shuffle.yaml", [*common, "data.folds=4"])
        save_config(cfg, work / "runs" / "bench" / "config.yaml")
        torch.manual_seed(0)
        for fold in range(4):
            save_checkpoint(build_model(cfg.model), cfg, work / "runs" / "bench" / f"fold{fold}")
        recipe = Recipe("bench", (Member("bench", str(work / "runs"), 1.0, 4),), str(data), "hflip,scale1.25", 128, Refine(8, 3e-4), steps)
    path = work / "submissions" / "bench.recipe.json"
    recipe.save(path)
    return path


def test_folder(work: Path, count: int) -> Path:
    """`count` test photos linked round-robin to the distinct synthetic test photos."""
    source = sorted((work / "data" / "test").glob("*.jpg"))[:DISTINCT]
    folder = work / f"test{count}"
    if folder.is_dir():
        return folder
    (folder / "test").mkdir(parents=True)
    names = [f"t{i:06d}_01.jpg" for i in range(count)]
    for i, name in enumerate(names):
        (folder / "test" / name).symlink_to(source[i % len(source)])
    pd.DataFrame({"img": names, "rle_mask": "1 1"}).to_csv(folder / "sample_submission.csv", index=False)
    return folder


def old_predict(recipe_path: Path, data: Path, out: Path, batch_size: int, workers: int) -> None:
    """The old predict.py loop: per-photo numpy chain in a thread pool, guide decoded again."""
    from concurrent.futures import ThreadPoolExecutor

    import old_chain
    import torch
    from torch.utils.data import DataLoader

    from carvana_seg.data.layout import CarvanaLayout, image_size
    from carvana_seg.inference.submit import TestPhotos, load_members, member_levels
    from carvana_seg.recipe.recipe import Recipe

    recipe = Recipe.load(recipe_path).replace(data_root=str(data))
    members, recipe = load_members(recipe, torch.device("cpu"))
    layout = CarvanaLayout(data)
    ids = layout.test_ids
    dataset = TestPhotos(layout, ids, [m.cfg.data.size for m in members], with_guides=False)
    refine = {"radius": recipe.refine.radius, "eps": recipe.refine.eps} if recipe.refine else None
    lines = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
            maps = [member_levels(m, batch["views"][k], recipe.views).numpy() for k, m in enumerate(members)]
            for j, i in enumerate(batch["i"].tolist()):
                photo = layout.image_path(ids[i], "test")
                args = ([p[j] for p in maps], recipe.weights, image_size(photo), photo, refine, recipe.threshold_level, list(recipe.postprocess))
                lines.append((i, pool.submit(old_chain.old_encode, *args)))
    out.write_text("img,rle_mask\n" + "".join(f"{ids[i]}.jpg,{f.result()}\n" for i, f in lines))


def worker(chain: str, recipe: Path, data: Path, out: Path, device: str, batch_size: int, workers: int) -> dict:
    import os

    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"
    start = time.perf_counter()
    if chain == "new":
        from carvana_seg.inference.submit import predict_submission

        predict_submission(recipe, data_root=str(data), out=out, workers=workers, batch_size=batch_size)
    else:
        old_predict(recipe, data, out, batch_size, workers)
    seconds = time.perf_counter() - start
    rows = len(pd.read_csv(out))
    return {"chain": chain, "images": rows, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def stage_split(recipe_path: Path, data: Path, device: str, batch_size: int, photos: int = 16) -> dict[str, dict[str, float]]:
    """Milliseconds a photo in each stage of each chain, one stage at a time in one process
    (no overlap, no loader workers), on `photos` test photos in batches of `batch_size`:
    where the time goes, as opposed to the pipelined totals."""
    import old_chain
    import torch

    from carvana_seg.ops.host_memory import keep_freed_memory
    from carvana_seg.data.layout import CarvanaLayout, image_size
    from carvana_seg.inference.submit import TestPhotos, load_members, member_levels
    from carvana_seg.recipe.chain import encode_batch, probability_values, threshold
    from carvana_seg.recipe.recipe import Recipe
    from carvana_seg.ops.rle import batch_runs

    keep_freed_memory()
    dev = torch.device(device)
    recipe = Recipe.load(recipe_path).replace(data_root=str(data))
    members, recipe = load_members(recipe, dev)
    layout = CarvanaLayout(data)
    ids = layout.test_ids[:photos]
    dataset = TestPhotos(layout, ids, [m.cfg.data.size for m in members], with_guides=recipe.refine is not None)
    old_dataset = TestPhotos(layout, ids, [m.cfg.data.size for m in members], with_guides=False)  # the old chain decoded its guide later
    refine = {"radius": recipe.refine.radius, "eps": recipe.refine.eps} if recipe.refine else None
    split: dict[str, dict[str, float]] = {"new": {}, "old": {}}

    @contextmanager
    def clock(chain: str, stage: str):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        yield
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if timed:
            split[chain][stage] = split[chain].get(stage, 0.0) + (time.perf_counter() - start) * 1000 / photos

    def old_mask(levels: list, weights: tuple, size: tuple[int, int], photo: Path, refine: dict | None, level: int):
        return (old_chain.old_levels(levels, weights, size, photo, refine) >= level).astype("uint8")

    def old_finish(mask, steps: tuple[str, ...]) -> str:
        for step in steps:
            mask = old_chain.POSTPROCESS[step](mask)
        return old_chain.rle_encode(mask)

    batches = [list(range(first, min(first + batch_size, photos))) for first in range(0, photos, batch_size)]
    for n, indices in enumerate([batches[0], *batches]):  # the first batch twice: its first pass warms up (allocations, kernel choice) and is not counted
        timed = n > 0
        size = image_size(layout.image_path(ids[indices[0]], "test"))
        with clock("new", "decode: loader items (views in draft mode, luma guide)"):
            items = [dataset[i] for i in indices]
        views = [torch.stack([item["views"][k] for item in items]).to(dev) for k in range(len(members))]
        guide = torch.stack([item["guide"] for item in items]).to(dev) if recipe.refine else None
        with clock("new", "networks: every fold x view"):
            maps = [member_levels(m, views[k], recipe.views) for k, m in enumerate(members)]
        with clock("new", "blend, upsample, guided filter"):
            values = probability_values(recipe, maps, size, guide)
        with clock("new", "threshold, run boundaries to the host"):
            runs = batch_runs(threshold(recipe, values))
        with clock("new", "post-processing + RLE on runs"):
            encode_batch(recipe, runs)
        with clock("old", "decode: loader items (views in draft mode)"):
            [old_dataset[i] for i in indices]
        host = [m.cpu().numpy() for m in maps]
        with clock("old", "blend, upsample, guide decoded again (RGB), guided filter, threshold"):
            masks = [old_mask([p[j] for p in host], recipe.weights, size, layout.image_path(ids[i], "test"), refine, recipe.threshold_level) for j, i in enumerate(indices)]
        with clock("old", "post-processing + RLE on pixels"):
            [old_finish(mask, recipe.postprocess) for mask in masks]
    old = split["old"]
    split["old"] = {"decode: loader items (views in draft mode)": old.pop("decode: loader items (views in draft mode)"),
                    "networks: every fold x view": split["new"]["networks: every fold x view"], **old}  # the same networks
    return split


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def peak_rss_mib() -> float:
    """This process's peak resident memory since exec (VmHWM; ru_maxrss would carry the parent's over a fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def decode_seconds(data: Path, count: int, repeats: int) -> float:
    """Decoding `count` test photos at full size once, in one thread (the fastest of `repeats` passes)."""
    from carvana_seg.data.layout import read_image

    paths = sorted((data / "test").glob("*.jpg"))[:count]
    read_image(paths[0])
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            read_image(path)
        passes.append(time.perf_counter() - start)
    return min(passes)


def agreement(a: Path, b: Path, data: Path) -> np.ndarray:
    """Per-photo Dice between two submissions' masks."""
    from carvana_seg.ops.metrics import dice_per_image
    from carvana_seg.data.layout import image_size
    from carvana_seg.ops.rle import rle_decode

    first, second = pd.read_csv(a, keep_default_na=False), pd.read_csv(b, keep_default_na=False)
    size = image_size(next((data / "test").glob("*.jpg")))
    return np.array([dice_per_image(rle_decode(x, size)[None], rle_decode(y, size)[None])[0] for x, y in zip(first["rle_mask"], second["rle_mask"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--counts", nargs="+", type=int, default=[32, 160], help="test-set sizes; the first is the start-up baseline")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chains", nargs="+", default=["old", "new"], choices=["old", "new"])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration, interleaved; the fastest counts (start-up varies by seconds)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        chain, recipe, data, out = args.worker
        print(json.dumps(worker(chain, Path(recipe), Path(data), Path(out), args.device, args.batch_size, args.workers)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recipe = prepare(work, args.shape)
        runs: dict[tuple[str, int], list[dict]] = {}
        for repeat in range(args.repeats):  # interleaved, so a slow spell of the machine hits every configuration
            for count in args.counts:
                data = test_folder(work, count)
                for chain in args.chains:
                    command = [sys.executable, __file__, "--device", args.device, "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                               "--worker", chain, str(recipe), str(data), str(work / f"{chain}{count}.csv")]
                    done = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
                    runs.setdefault((chain, count), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(repeat, runs[chain, count][-1], flush=True)
        rows = [min(runs[chain, count], key=lambda r: r["seconds"]) for count in args.counts for chain in args.chains]  # the fastest of the repeats
        split = stage_split(recipe, test_folder(work, args.counts[-1]), args.device, args.batch_size)
        extra = args.counts[-1] - args.counts[0]
        decode = decode_seconds(test_folder(work, args.counts[-1]), extra, args.repeats)
        dice = agreement(work / f"old{args.counts[-1]}.csv", work / f"new{args.counts[-1]}.csv", test_folder(work, args.counts[-1])) if len(args.chains) == 2 else None
    table = ["| chain | test photos | seconds | photos/s | peak RSS MiB |", "| --- | ---: | ---: | ---: | ---: |"]
    table += [f"| {r['chain']} | {r['images']:,} | {r['seconds']:.1f} | {r['images'] / r['seconds']:.1f} | {r['peak_rss_mib']:.0f} |" for r in rows]
    marginal = []
    for chain in args.chains:
        by_count = {r["images"]: r["seconds"] for r in rows if r["chain"] == chain}
        seconds = by_count[args.counts[-1]] - by_count[args.counts[0]]
        marginal.append(f"| {chain} | {seconds:.1f} | {extra / seconds:.1f} | **{seconds / decode:.2f}x** |")
    body = "\n".join([
        f"Recipe shape `{args.shape}`, device `{args.device}`, batch size {args.batch_size}, {args.workers} loader workers and {args.workers} encoding threads; "
        f"each figure the fastest of {args.repeats} runs (interleaved, each in a fresh process).",
        "",
        *table,
        "",
        f"Marginal cost of {extra} more photos ({args.counts[-1]} minus {args.counts[0]}), against decoding those {extra} photos "
        f"at full size once in one thread: **{decode:.1f} s**.",
        "",
        f"| chain | seconds for {extra} more | photos/s (marginal) | vs decoding once |",
        "| --- | ---: | ---: | ---: |",
        *marginal,
        "",
        "Where the time goes: milliseconds a photo in each stage, one stage at a time in one process "
        f"({torch_threads()} torch threads, no loader workers, no overlap between stages; 16 photos):",
        "",
        "| chain | stage | ms a photo |",
        "| --- | --- | ---: |",
        *[f"| {chain} | {stage} | {ms:.1f} |" for chain, stages in split.items() for stage, ms in stages.items()],
        *[f"| {chain} | **total** | **{sum(stages.values()):.1f}** |" for chain, stages in split.items()],
        "",
        ("" if dice is None else f"Old vs new chain, per-photo Dice between their masks on the {len(dice)} photos: min {dice.min():.6f}, "
         f"median {np.median(dice):.6f}, mean {dice.mean():.6f} (resampling and rounding only)."),
    ])
    counts = "" if args.counts == parser.get_default("counts") else "_" + "_".join(map(str, args.counts))
    write_result(f"predict_{args.shape}_{args.device}{counts}", f"Test prediction, old chain vs new ({args.shape} recipe shape, {args.device})", body)


if __name__ == "__main__":
    main()
