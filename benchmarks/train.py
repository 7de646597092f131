"""Training throughput and peak memory for a demo config, with the resized-data cache on
and off: does data loading keep up with the model on this CPU?

For each setting a fresh subprocess (so its peak RSS is its own) first times one pass of
the training DataLoader alone (data images/s), then trains one epoch of fold 0 (training
images/s from the trainer's own count).

    python benchmarks/train.py [--config configs/demo/unet_plain.yaml] [--data DIR] [--images 96]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REAL_CARVANA, REPO, write_result  # noqa: E402


def worker(config: str, data: str, use_cache: bool, work: Path) -> dict:
    from torch.utils.data import DataLoader

    from carvana_seg.config import load_config
    from carvana_seg.data.dataset import SegmentationDataset
    from carvana_seg.data.folds import make_folds, write_folds
    from carvana_seg.data.layout import CarvanaLayout
    from carvana_seg.data.sources import DecodedSource, build_cache
    from carvana_seg.training.trainer import train_fold

    cfg = load_config(config, [
        f"data.root={data}", f"data.use_cache={str(use_cache).lower()}", f"data.cache_dir={work / 'cache'}",
        f"data.folds_file={work / 'folds.csv'}", f"exp.runs_dir={work / 'runs'}", f"exp.oof_dir={work / 'oof'}",
        "train.epochs=1", f"exp.name=bench_cache_{use_cache}",
    ])
    layout = CarvanaLayout(cfg.data.root)
    write_folds(make_folds(layout, cfg.data.folds, cfg.data.fold_seed), cfg.data.folds_path)
    ids = layout.train_ids
    start = time.perf_counter()
    source = build_cache(layout, ids, cfg.data.size, cfg.data.cache_dir) if use_cache else DecodedSource(layout, ids, cfg.data.size)
    build_s = time.perf_counter() - start
    loader = DataLoader(SegmentationDataset(source, range(len(ids)), train=True), batch_size=cfg.train.batch_size, num_workers=cfg.data.num_workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    data_ips = len(ids) / (time.perf_counter() - start)
    scores = train_fold(cfg, fold=0)
    return {"cache_build_s": build_s if use_cache else 0.0, "data_img_s": data_ips, "train_img_s": scores["train_images_per_s"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "images": len(ids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo/unet_plain.yaml")
    parser.add_argument("--data", default=str(REAL_CARVANA if REAL_CARVANA.is_dir() else REPO / "input" / "synthetic"))
    parser.add_argument("--worker", nargs=2, metavar=("USE_CACHE", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.config, args.data, args.worker[0] == "1", Path(args.worker[1]))))
        return
    rows = {}
    for use_cache in (True, False):
        with tempfile.TemporaryDirectory() as work:
            out = subprocess.run(
                [sys.executable, __file__, "--config", args.config, "--data", args.data, "--worker", str(int(use_cache)), work],
                cwd=REPO, check=True, capture_output=True, text=True,
            ).stdout
            rows[use_cache] = json.loads(out.strip().splitlines()[-1])
    table = ["| data cache | data pipeline img/s | training img/s | peak RSS MiB | cache build s |", "| --- | ---: | ---: | ---: | ---: |"]
    for use_cache, r in rows.items():
        table.append(f"| {'on' if use_cache else 'off'} | {r['data_img_s']:.1f} | {r['train_img_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['cache_build_s']:.1f} |")
    on, off = rows[True], rows[False]
    body = "\n".join([
        f"Config `{args.config}` on `{args.data}` ({on['images']} images), one epoch of fold 0 per setting; "
        "data pipeline = one pass of the training DataLoader alone (decode or cache read, augmentation, normalisation).",
        "",
        *table,
        "",
        f"With the cache the data pipeline delivers {on['data_img_s'] / on['train_img_s']:.0f}x what the model consumes; "
        f"without it, {off['data_img_s'] / off['train_img_s']:.1f}x (and training runs at {off['train_img_s'] / on['train_img_s']:.2f}x the cached speed). "
        "One run on a shared 2-core CPU: read differences under ~20% as noise.",
    ])
    write_result("train", "Training throughput: data cache on and off", body)


if __name__ == "__main__":
    main()
