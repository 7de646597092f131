"""Decoding the test photos: loader workers (`predict.py --decode cpu`) against one batched
`torchvision.io.decode_jpeg` call per batch on the model's device (`--decode device`).

Both loops do what prediction does before the networks: build the batches of `TestPhotos`
through a DataLoader with N workers and make each member's network input and the guide on
`--device` (`TestPhotos.on_device`). `cpu` is draft-mode decoding in the workers plus the
luma plane at full size; `device` is the workers reading the files' bytes and the main
process decoding the batch on the device (the guide from a second, luma-only decode: `gray`,
or from the RGB decode: `rgb`). Photos: 1918x1280 synthetic ones (`data/synthetic/`), and
the real ones of `--real` when that folder exists (skipped with a message when it does not).
Each figure is the best of `--repeat` passes over all photos through one DataLoader (its
workers started once, as in prediction), after one warm-up batch.

    python benchmarks/decode.py [--device cpu|cuda] [--workers 0 2] [--batch-size 4] [--count 64] [--sizes 256x384] [--real DIR]
    python benchmarks/decode.py --device cuda --workers 14 --batch-size 32 --count 512    # the GPU figure
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from carvana_seg.config import parse_size
from carvana_seg.data import device_photos
from carvana_seg.data.photos import same_size_batches
from carvana_seg.data.layout import CarvanaLayout, image_size
from carvana_seg.data.synthetic import generate
from carvana_seg.inference.submit import TestPhotos

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REAL_CARVANA, write_result  # noqa: E402

warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision are deprecated", DeprecationWarning)


def synthetic_photos(work: Path, count: int) -> Path:
    """A Carvana-layout folder with at least `count` distinct 1918x1280 synthetic test photos."""
    return generate(work / "synthetic", cars=1, test_cars=-(-count // 16), seed=7)


def real_photos(work: Path, folder: Path, count: int) -> Path | None:
    """A test layout of the first `count` photos of `folder` (linked), or None when it is absent."""
    photos = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    if not photos:
        print(f"real photos not found at {folder} (no .jpg there): measuring the synthetic ones only; --real DIR names another folder")
        return None
    root = work / "real"
    (root / "test").mkdir(parents=True)
    for photo in photos:
        (root / "test" / photo.name).symlink_to(photo.resolve())
    pd.DataFrame({"img": [p.name for p in photos], "rle_mask": "1 1"}).to_csv(root / "sample_submission.csv", index=False)
    return root


def photos_per_second(
    root: Path, count: int, decode: str, guide_from: str | None, sizes: list[tuple[int, int]], workers: int, batch_size: int, device: torch.device, repeat: int
) -> float:
    """Best photos/s over `repeat` passes of the whole loop: loader batches -> network inputs and guide on `device`."""
    layout = CarvanaLayout(root)
    ids = layout.test_ids[:count]
    dataset = TestPhotos(layout, ids, sizes, with_guides=guide_from is not None, decode=decode)
    batches = list(same_size_batches({i: image_size(layout.image_path(ids[i], "test")) for i in range(len(ids))}, range(len(ids)), batch_size))
    if guide_from is not None:
        device_photos.GUIDE_FROM[device.type] = guide_from  # the device path's guide; the cpu path ignores it

    # one loader for every pass, as prediction has one for the whole test set: its workers start
    # once, and a pass is timed from the previous pass's last batch to its own (steady state)
    plan = batches[:1] + batches * repeat  # a warm-up batch: nvJPEG's and OpenCV's first calls, the page cache
    loader = DataLoader(dataset, batch_sampler=plan, num_workers=workers, pin_memory=device.type == "cuda", collate_fn=dataset.collate)
    ends = []
    for k, batch in enumerate(loader):
        dataset.on_device(batch, device)
        if (k - 1) % len(batches) == len(batches) - 1 or k == 0:  # the warm-up batch, then the last batch of each pass
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            ends.append(time.perf_counter())
    best = min(b - a for a, b in itertools.pairwise(ends))
    return len(ids) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2], help="loader workers (each count measured)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--count", type=int, default=64, help="photos per pass")
    parser.add_argument("--sizes", nargs="+", default=["256x384"], help="the members' training sizes (HxW); default: the real-data recipe's")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--real", type=Path, default=REAL_CARVANA / "test", help="a folder of real 1918x1280 photos")
    args = parser.parse_args()
    device_photos.check_decode("device")
    device = torch.device(args.device)
    sizes = [parse_size(s, "--sizes") for s in args.sizes]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"synthetic": synthetic_photos(Path(tmp), args.count), "real": real_photos(Path(tmp), args.real, args.count)}
        for source, root in sources.items():
            if root is None:
                continue
            for workers in args.workers:
                for decode, guide_from in [("cpu", None), ("cpu", "gray"), ("device", None), ("device", "gray"), ("device", "rgb")]:
                    rate = photos_per_second(root, args.count, decode, guide_from, sizes, workers, args.batch_size, device, args.repeat)
                    rows.append((source, workers, decode, guide_from or "no guide", rate))
                    print(rows[-1], flush=True)
    table = ["| photos | loader workers | decode | guide | photos/s |", "| --- | ---: | --- | --- | ---: |"]
    table += [f"| {source} | {workers} | {decode} | {guide} | {rate:.1f} |" for source, workers, decode, guide, rate in rows]
    measured = sorted({source for source, *_ in rows})
    cuda_note = (
        "The CUDA figure is not measured on a GPU yet. Measure it with "
        "`python benchmarks/decode.py --device cuda --workers 14 --batch-size 32 --count 512` "
        "(writes `benchmarks/results/decode_cuda.md`)."
        if args.device == "cpu"
        else ""
    )
    body = f"""
{args.count} photos of 1918x1280 ({", ".join(measured)}), network inputs at {", ".join(args.sizes)}, batches of {args.batch_size}, on `{args.device}`.
`cpu`: the loader workers decode (draft mode for the networks, the luma plane for the guide) and
the main process moves the tensors to the device; `device`: the workers read the files' bytes
and the main process decodes each batch with one `decode_jpeg` call on the device, area-resizes
and normalises there; guide `gray` a second, luma-only decode, `rgb` the luma of the RGB decode.
With 0 workers everything runs in the main process.

{chr(10).join(table)}

{cuda_note}
"""
    write_result(f"decode_{args.device}", f"Decoding test photos: loader workers vs decode_jpeg on {args.device}", body)


if __name__ == "__main__":
    main()
