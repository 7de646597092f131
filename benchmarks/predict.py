"""Test-set prediction: end-to-end images/second and peak memory as the test set grows
(memory must stay flat), and where the time goes (decode, model, upsample+threshold, RLE).

A tiny model is trained on synthetic data first (the recipe's cost scales with its members
and folds; the pipeline around them is what this measures). The test sets are 100, 1,000
and 5,000 synthetic 1918x1280 JPEGs: 100 distinct photos, linked repeatedly, so every image
is decoded from disk as in a real run. Each size runs in a fresh subprocess for its own peak RSS.

    python benchmarks/predict.py [--counts 100 1000 5000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_result  # noqa: E402

DISTINCT = 100


def prepare(work: Path) -> Path:
    """Synthetic data, one tiny experiment on it, and its recipe; returns the recipe path."""
    from carvana_seg.config import load_config
    from carvana_seg.data.folds import make_folds, write_folds
    from carvana_seg.data.layout import CarvanaLayout
    from carvana_seg.data.synthetic import generate
    from carvana_seg.inference.tune import tune
    from carvana_seg.training.cv import train_experiments

    data = generate(work / "data", cars=4, test_cars=7, seed=1)  # 7 x 16 = 112 test photos
    write_folds(make_folds(CarvanaLayout(data), 2, seed=0), data / "folds.csv")
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"data.root={data}", f"data.cache_dir={work / 'cache'}", "train.epochs=1",
                                                       f"exp.runs_dir={work / 'runs'}", f"exp.oof_dir={work / 'oof'}", "exp.name=bench"])
    train_experiments([cfg])
    tune(["bench"], work / "runs", tta="hflip", name="bench", out_dir=work / "submissions")
    return work / "submissions" / "bench.recipe.json"


def test_folder(work: Path, count: int) -> Path:
    """`count` test images linked round-robin to the distinct synthetic test photos."""
    source = sorted((work / "data" / "test").glob("*.jpg"))[:DISTINCT]
    folder = work / f"test{count}"
    (folder / "test").mkdir(parents=True)
    names = [f"t{i:06d}_01.jpg" for i in range(count)]
    for i, name in enumerate(names):
        (folder / "test" / name).symlink_to(source[i % len(source)])
    pd.DataFrame({"img": names, "rle_mask": "1 1"}).to_csv(folder / "sample_submission.csv", index=False)
    return folder


def stage_split(recipe: Path, data: Path, images: int = 40) -> dict[str, float]:
    """Milliseconds per image of each stage, run one after another on the same images."""
    import torch

    from carvana_seg.core.oof import upsample_probs
    from carvana_seg.core.views import parse_tta
    from carvana_seg.data.layout import CarvanaLayout
    from carvana_seg.inference.submit import TestImages, load_recipe, predict_member
    from carvana_seg.recipe.postprocess import apply_postprocess
    from carvana_seg.rle import rle_encode

    recipe_dict, members = load_recipe(recipe, torch.device("cpu"), str(data))
    layout = CarvanaLayout(data)
    dataset = TestImages(layout, layout.test_ids[:images], [m.cfg.data.hw for m in members])
    timings = {}
    start = time.perf_counter()
    samples = [dataset[i] for i in range(images)]
    timings["decode + resize"] = time.perf_counter() - start
    start = time.perf_counter()
    batch = torch.stack([s["views"][0] for s in samples])
    levels = np.concatenate([predict_member(members[0], batch[i : i + 4], parse_tta(recipe_dict["tta"])) for i in range(0, images, 4)])
    timings["model (all folds, TTA)"] = time.perf_counter() - start
    size = tuple(int(v) for v in samples[0]["size"])
    start = time.perf_counter()
    masks = [apply_postprocess((upsample_probs(p, size) >= recipe_dict["threshold_level"]).astype(np.uint8), recipe_dict["postprocess"]) for p in levels]
    timings["upsample + threshold + post-process"] = time.perf_counter() - start
    start = time.perf_counter()
    for mask in masks:
        rle_encode(mask)
    timings["RLE encode"] = time.perf_counter() - start
    return {k: 1000 * v / images for k, v in timings.items()}


def worker(recipe: Path, data: Path, out: Path) -> dict:
    from carvana_seg.inference.submit import predict_submission

    start = time.perf_counter()
    predict_submission(recipe, data_root=str(data), out=out, workers=2)
    seconds = time.perf_counter() - start
    rows = len(pd.read_csv(out))
    return {"images": rows, "seconds": seconds, "img_s": rows / seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", nargs="+", type=int, default=[100, 1000, 5000])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.worker[0]), Path(args.worker[1]), Path(args.worker[2]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recipe = prepare(work)
        rows = []
        for count in args.counts:
            data = test_folder(work, count)
            out = subprocess.run([sys.executable, __file__, "--worker", str(recipe), str(data), str(work / f"sub{count}.csv")],
                                 cwd=REPO, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        split = stage_split(recipe, test_folder(work, 40))
    table = ["| test images | seconds | images/s end to end | peak RSS MiB (main process) |", "| ---: | ---: | ---: | ---: |"]
    table += [f"| {r['images']:,} | {r['seconds']:.1f} | {r['img_s']:.1f} | {r['peak_rss_mib']:.0f} |" for r in rows]
    stages = ["| stage (run alone) | ms / image |", "| --- | ---: |"] + [f"| {k} | {v:.1f} |" for k, v in split.items()]
    total = sum(split.values())
    body = "\n".join([
        "Recipe: one tiny U-Net experiment (configs/tiny.yaml, 2 folds, 64x96) with hflip TTA; 1918x1280 synthetic test JPEGs.",
        "",
        *table,
        "",
        f"Peak memory from {rows[0]['images']:,} to {rows[-1]['images']:,} images: {rows[0]['peak_rss_mib']:.0f} -> {rows[-1]['peak_rss_mib']:.0f} MiB.",
        "",
        *stages,
        "",
        f"The stages run alone add up to {total:.1f} ms/image ({1000 / total:.1f} images/s in turn); the streaming pipeline "
        "overlaps them across loader workers, the main thread and the encoding threads. One run on a shared 2-core CPU.",
    ])
    write_result("predict", "Test prediction: throughput, memory and time split", body)


if __name__ == "__main__":
    main()
