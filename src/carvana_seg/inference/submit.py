"""Predict the test set with a recipe and write the submission CSV.

The test set is cut into fixed chunks of photos. Each chunk is predicted the same way
whichever process takes it (chunk c goes to process c mod N), and lands as its own part
file, atomically: an interrupted run resumes at the first missing chunk, and N processes
write the same bytes as one. The main process then joins the parts in sample order into
the final file (atomic rename) and validates it.

The work is a pipeline, so the slowest stage sets the pace: loader workers decode the
photos (the next batches, across chunk boundaries, while this one is on the device); the
main thread runs every fold model of every member with TTA and, on a GPU, the recipe's chain
up to the thresholded masks' runs, batched on the device (recipe/chain.py); a thread pool
post-processes the runs and writes their RLE (on the CPU it runs each photo's whole chain,
beside the next batch's networks); finished chunks are written as soon as their last line
is encoded. Memory is bounded by the batches in flight, whatever the test set's size
(docs/benchmarks.md has the peak memory at 1,000 and 5,000 photos).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import shutil
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from carvana_seg.config import Config
from carvana_seg.data.device_photos import check_decode, device_inputs, read_jpeg
from carvana_seg.store.experiment import fold_weights, load_fold_model, member_configs
from carvana_seg.ops.host_memory import keep_freed_memory
from carvana_seg.data.photos import same_size_batches
from carvana_seg.models.tta import predict_probs, to_levels
from carvana_seg.data.dataset import build_transform
from carvana_seg.data.layout import CarvanaLayout
from carvana_seg.data.layouts import Layout, open_layout
from carvana_seg.data.sources import resize_image
from carvana_seg.errors import PipelineError
from carvana_seg.inference.check import check_submission, gzip_named
from carvana_seg.inference.onnx_backend import load_onnx_fold, onnx_path
from carvana_seg.io_utils import atomic_path, blocking_parent
from carvana_seg.locks import exclusive_lock
from carvana_seg.names import check_plain_name
from carvana_seg.recipe.chain import apply_recipe
from carvana_seg.recipe.recipe import Recipe

CHUNK_IMAGES = 256
CPU_BATCH, GPU_BATCH = 4, 32  # photos per batch by default: a GPU needs many to stay busy
IN_FLIGHT_BATCHES = 4  # batches that may wait for the chain / encoding threads (bounds memory)


@dataclass
class LoadedMember:
    """A recipe member (recipe/recipe.Member: an experiment named, weighted, with a fold count)
    with its fold networks loaded on the device, ready to predict. A type of its own because
    it holds live models, which only prediction needs: the recipe stays a frozen description
    that tuning, the leaderboard and the bundle read without loading a network."""

    cfg: Config
    models: list[torch.nn.Module]
    files: list[Path]  # the file each fold model came from (safetensors, or ONNX under onnxruntime)


class TestPhotos(Dataset):
    """A test photo as the recipe needs it: resized to each member's training size (decoded in
    JPEG draft mode, as training read it), and at full size as the grey guide when refining.

    `decode` "device": a loader worker only reads the photo's bytes; `on_device` decodes the
    whole batch on the model's device and makes the same inputs there (data/device_photos.py)."""

    def __init__(self, layout: CarvanaLayout, ids: list[str], member_sizes: list[tuple[int, int]], with_guides: bool, decode: str = "cpu"):
        check_decode(decode)
        self.layout, self.ids, self.member_sizes, self.with_guides, self.decode = layout, ids, member_sizes, with_guides, decode
        self.transform = build_transform(train=False, channels=layout.channels)
        self.names, self.rle_format = layout.submission_names, layout.rle_format
        self.largest = max(member_sizes, key=lambda hw: hw[0] * hw[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        path = self.layout.image_path(self.ids[i], "test")
        if self.decode == "device":
            return {"i": i, "jpeg": read_jpeg(path)}
        image = self.layout.read_photo(path, draft_size=(self.largest[1], self.largest[0]))
        item = {"i": i, "views": [self.transform(image=resize_image(image, hw))["image"] for hw in self.member_sizes]}
        if self.with_guides:
            item["guide"] = torch.from_numpy(self.layout.read_guide(path))
        return item

    def collate(self, items: list[dict]) -> dict:
        """The DataLoader's collate_fn: files' bytes differ in length, so device mode keeps them a list."""
        if self.decode == "device":
            return {"i": torch.tensor([item["i"] for item in items]), "jpeg": [item["jpeg"] for item in items]}
        return default_collate(items)

    def on_device(self, batch: dict, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """A loader batch -> each member's network input and the guide (None without refinement), on `device`."""
        if self.decode == "device":
            paths = [self.layout.image_path(self.ids[i], "test") for i in batch["i"].tolist()]  # a CPU tensor: no device sync
            return device_inputs(batch["jpeg"], paths, self.member_sizes, self.with_guides, device)
        views = [view.to(device, non_blocking=True) for view in batch["views"]]
        return views, batch["guide"].to(device, non_blocking=True) if "guide" in batch else None


BACKENDS = ("torch", "onnxruntime")  # what runs the fold networks; the chain around them is the same


def load_members(recipe: Recipe, device: torch.device, backend: str = "torch") -> tuple[list[LoadedMember], Recipe]:
    """Every fold model of every member with a weight; the recipe without the weightless ones.
    The weights are read where the recipe found the run (a bundle's copy, say), not where the
    run's config says it was trained."""
    if backend not in BACKENDS:
        raise PipelineError(f"backend {backend!r}: use one of {', '.join(BACKENDS)}")
    kept = [m for m in recipe.members if m.weight > 0]
    loaded = []
    for member, cfg in zip(kept, member_configs(kept, f"recipe {recipe.name!r}")):
        if backend == "onnxruntime":
            files = [onnx_path(cfg, fold) for fold in range(member.folds)]
            models = [load_onnx_fold(path, device) for path in files]
        else:
            files = [fold_weights(cfg, fold) for fold in range(member.folds)]
            models = [load_fold_model(cfg, fold, device) for fold in range(member.folds)]
        loaded.append(LoadedMember(cfg, models, files))
    return loaded, recipe.replace(members=tuple(kept))


def member_levels(member: LoadedMember, images: torch.Tensor, views: list[str]) -> torch.Tensor:
    """Mean probability over the member's fold models, as uint8 levels at its training size (on the device)."""
    probs = sum(predict_probs(model, images, views, member.cfg.train.precision) for model in member.models) / len(member.models)
    return to_levels(probs)


def parts_stamp(recipe: Recipe, members: list[LoadedMember], ids: list[str], chunk_images: int, batch_size: int, decode: str = "cpu") -> str:
    """Everything that changes a chunk's bytes: the recipe (and its data root), the photos and
    their order, the chunking and batching, where the photos are decoded, and the weights' files
    (retrained models, other masks)."""
    weights = []
    for member in members:
        for path in member.files:
            stat = path.stat()
            weights.append([str(path), stat.st_size, stat.st_mtime_ns])
    return json.dumps({
        "recipe": {k: v for k, v in recipe.to_json().items() if k != "cv"},
        "photos": hashlib.sha1("\n".join(ids).encode()).hexdigest(),
        "chunk_images": chunk_images,
        "batch_size": batch_size,
        "decode": decode,
        "weights": weights,
    }, sort_keys=True)


def claim_parts_dir(parts_dir: Path, stamp: str) -> None:
    """Keep finished chunks only if they were made by this very recipe, data and chunking."""
    stamp_file = parts_dir / "stamp.json"
    if parts_dir.is_dir() and (not stamp_file.is_file() or stamp_file.read_text() != stamp):
        print(f"{parts_dir} holds chunks of a different recipe, data or chunking: starting over")
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    if not stamp_file.is_file():
        with atomic_path(stamp_file) as tmp:
            tmp.write_text(stamp)


def read_sizes(layout: CarvanaLayout, ids: list[str], indices: list[int], show: bool) -> dict[int, tuple[int, int]]:
    """Header sizes of the photos this process predicts: a missing or unreadable photo is named now."""
    sizes = {}
    for i in tqdm(indices, desc="reading test photo headers", disable=None if show else True, leave=False):
        path = layout.image_path(ids[i], "test")
        if not path.is_file():
            raise PipelineError(f"{path} is missing: {layout.sample_path.name} lists {layout.submission_names[i]}")
        sizes[i] = layout.photo_size(path)
    return sizes


def join_parts(dest: Path, parts: list[Path], name: str, header: str = "img,rle_mask") -> None:
    """Write the CSV header and the chunks' lines into `dest`, gzip-compressed when the final
    file's `name` ends in .gz. The gzip header records that name (less .gz) and time 0, never
    the temporary file's, so the same chunks always give the same bytes."""
    with open(dest, "wb") as raw, (gzip.GzipFile(name, "wb", fileobj=raw, mtime=0) if gzip_named(Path(name)) else contextlib.nullcontext(raw)) as handle:
        handle.write(f"{header}\n".encode())
        for part in parts:
            handle.write(part.read_bytes())


def predict_chunks(
    recipe: Recipe, members: list[LoadedMember], dataset: TestPhotos, chunks: list[list[int]], todo: list[int], sizes: dict[int, tuple[int, int]],
    parts_dir: Path, device: torch.device, workers: int, batch_size: int, show: bool,
) -> None:
    """Predict the chunks `todo` and write each one's part file as soon as it is complete."""
    plan = [(c, batch) for c in todo for batch in same_size_batches(sizes, chunks[c], batch_size)]
    loader = DataLoader(dataset, batch_sampler=[batch for _, batch in plan], num_workers=workers, pin_memory=device.type == "cuda", collate_fn=dataset.collate)
    views = recipe.views
    lines: dict[int, dict[int, tuple[Future, int]]] = {c: {} for c in todo}  # chunk -> photo -> (the future holding its RLE, place in its result)

    def row(i: int, rle: str) -> str:  # the chain writes Carvana's RLE: in the data's format, under the sample's spelling
        return f"{dataset.names[i]},{dataset.rle_format.from_carvana(rle, sizes[i])}\n"

    in_flight: deque[list[Future]] = deque()  # each batch's futures
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=sum(len(chunks[c]) for c in todo), desc="test photos", disable=None if show else True) as bar:  # None: no bar outside a terminal
        for (c, indices), batch in zip(plan, loader):
            inputs, guide = dataset.on_device(batch, device)
            maps = [member_levels(m, x, views) for m, x in zip(members, inputs)]
            places = apply_recipe(recipe, maps, sizes[indices[0]], guide, pool)
            lines[c].update(zip(indices, places))
            in_flight.append([future for future, _ in places])
            while len(in_flight) > IN_FLIGHT_BATCHES:
                for future in in_flight.popleft():
                    future.result()
            bar.update(len(indices))
            for done in [d for d in lines if len(lines[d]) == len(chunks[d]) and all(f.done() for f, _ in lines[d].values())]:
                write_part(parts_dir, done, row, chunks[done], lines.pop(done))
        for done in list(lines):
            write_part(parts_dir, done, row, chunks[done], lines.pop(done))


def write_part(parts_dir: Path, c: int, row: Callable[[int, str], str], chunk: list[int], lines: dict[int, tuple[Future, int]]) -> None:
    """Chunk `c`'s lines, `row(photo, rle)` each, as its part file (atomically)."""
    with atomic_path(parts_dir / f"chunk-{c:06d}.csv") as tmp:
        tmp.write_text("".join(row(i, lines[i][0].result()[lines[i][1]]) for i in chunk))


def predict_submission(
    recipe_path: str | Path | Recipe, data_root: str | None = None, out: str | Path | None = None, compress: bool = False,
    batch_size: int = 0, workers: int = 2, chunk_images: int = CHUNK_IMAGES, backend: str = "torch", decode: str = "cpu",
) -> Path | None:
    """Write the submission (resuming from finished chunks); returns its path on the main process.
    `recipe_path`: a recipe file, or a loaded Recipe (a bundle's: `inference/bundle.py`), whose
    submission goes by default to <name>.csv in the current folder (<name>.csv.gz with
    `compress`; the file's name decides: see `submission_path`). `batch_size` 0: 32 photos
    on a GPU, 4 on the CPU. `backend` onnxruntime: the fold networks are the bundle's ONNX files.
    `decode` "device": the photos are decoded on the model's device, a batch at a time, instead
    of in the loader workers (data/device_photos.py; opt-in, its inputs differ slightly)."""
    check_decode(decode)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as Accelerator reads it
    keep_freed_memory()
    batch_size = batch_size or (GPU_BATCH if state.device.type == "cuda" else CPU_BATCH)
    recipe = recipe_path if isinstance(recipe_path, Recipe) else Recipe.load(recipe_path)
    source = f"recipe {recipe.name!r}" if recipe is recipe_path else str(recipe_path)
    member_configs(recipe.members, source)  # a missing or mismatched run is named now, not after the test set is half read
    out_dir = Path(".") if isinstance(recipe_path, Recipe) else Path(recipe_path).parent
    if data_root:
        recipe = recipe.replace(data_root=data_root)
    out = submission_path(out or out_dir / (recipe.name + (".csv.gz" if compress else ".csv")), compress)
    with output_lock(out, state.is_main_process):
        return write_submission(recipe, out, state, batch_size, workers, chunk_images, backend, decode)


def submission_path(out: str | Path, compress: bool) -> Path:
    """`out` as the submission file, refused before any photo is predicted when it cannot be one:
    an existing folder, a file on its way, a name that is not plain, or `compress` (--gzip) with
    a name not ending in .gz. The name decides the content: gzip when it ends in .gz."""
    path, typed = Path(out), str(out)
    blocker = blocking_parent(path)
    if blocker:
        raise PipelineError(f"--out {typed!r}: {blocker} is not a folder, so no file can be written under it; choose another --out")
    if path.is_dir():
        raise PipelineError(f"--out {typed!r} is a folder: --out names the submission file, e.g. {path / 'NAME.csv'}")
    check_plain_name(path.name, f"--out {typed!r}")
    if compress and not gzip_named(path):
        raise PipelineError(f"--gzip with --out {typed!r}: the name decides the content, so a gzip submission's ends in .gz: "
                            f"give --out {typed}.gz (a .gz name alone compresses too)")
    return path


def output_lock(out: Path, main_process: bool) -> contextlib.AbstractContextManager:
    """One writer per submission file: the main process holds `<out>.lock` from before the parts
    folder is touched until the file is written, so a second predict.py naming the same file is
    refused (naming the holder) instead of sharing, or removing, the first one's chunks. The
    launch's other processes write chunks only after the main process has claimed the folder."""
    if not main_process:
        return contextlib.nullcontext()
    return exclusive_lock(out.with_name(out.name + ".lock"), f"submission {out}")


def prediction_layout(recipe: Recipe, members: list[LoadedMember], decode: str) -> Layout:
    """The recipe's data root, read as the first member's data settings say (its layout, RLE
    format, intensity range); its test folder must exist."""
    layout = open_layout(members[0].cfg.data, recipe.data_root)
    test_dir = layout.folder("test")
    if not test_dir.is_dir():
        raise PipelineError(f"{test_dir} is missing: predict needs the test images beside {layout.sample_path.name}")
    if decode == "device" and not isinstance(layout, CarvanaLayout):
        raise PipelineError(f"--decode device reads JPEG photos of the carvana layout only; data.layout is {members[0].cfg.data.layout!r}: use --decode cpu")
    return layout


def write_submission(
    recipe: Recipe, out: Path, state: PartialState, batch_size: int, workers: int, chunk_images: int, backend: str, decode: str,
) -> Path | None:
    """Predict the missing chunks into `<out>.parts/`, then join and validate them into `out` (main process)."""
    members, recipe = load_members(recipe, state.device, backend)
    layout = prediction_layout(recipe, members, decode)
    ids = layout.test_ids
    parts_dir = out.with_name(out.name + ".parts")  # the parts folder stays beside the file
    chunks = [list(range(start, min(start + chunk_images, len(ids)))) for start in range(0, len(ids), chunk_images)]
    mine = [c for c in range(len(chunks)) if c % state.num_processes == state.process_index]
    sizes = read_sizes(layout, ids, [i for c in mine for i in chunks[c]], state.is_local_main_process)
    if state.is_main_process:
        claim_parts_dir(parts_dir, parts_stamp(recipe, members, ids, chunk_images, batch_size, decode))
    state.wait_for_everyone()
    todo = [c for c in mine if not (parts_dir / f"chunk-{c:06d}.csv").is_file()]
    if len(todo) < len(mine):
        state.print(f"resuming: {len(mine) - len(todo)} of {len(mine)} chunks already written in {parts_dir}")
    dataset = TestPhotos(layout, ids, [m.cfg.data.size for m in members], with_guides=recipe.refine is not None, decode=decode)
    predict_chunks(recipe, members, dataset, chunks, todo, sizes, parts_dir, state.device, workers, batch_size, state.is_local_main_process)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    with atomic_path(out) as tmp:
        join_parts(tmp, [parts_dir / f"chunk-{c:06d}.csv" for c in range(len(chunks))], out.name, ",".join(layout.submission_header))
        names = layout.submission_names
        known = {names[i]: size for i, size in sizes.items()}  # the other processes' photos: read from their headers
        id_of = dict(zip(names, ids))

        def size_of(name: str) -> tuple[int, int]:
            return known.get(name) or layout.photo_size(layout.image_path(id_of.get(name, name), "test"))

        problems = check_submission(tmp, layout.sample_path, size_of, layout.rle_format)
        if problems:
            raise PipelineError(f"{out} failed validation and was not written:\n" + "\n".join(problems))
    shutil.rmtree(parts_dir)
    return out
