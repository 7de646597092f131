"""Predict the test set with a recipe and write the submission CSV.

The test set is cut into fixed chunks of images. Each chunk is predicted the same way
whichever process takes it (chunk c goes to process c mod N), and lands as its own
part file, atomically: an interrupted run resumes at the first missing chunk, and N
processes write the same bytes as one. The main process then joins the parts in sample
order into the final file (atomic rename) and validates it.

Inside a chunk, loader workers decode JPEGs, the main thread runs the models, and a
thread pool upsamples, refines, thresholds, post-processes and RLE-encodes: the three overlap.
Memory is bounded by one chunk's rows, whatever the test set's size.
"""

from __future__ import annotations

import gzip
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from carvana_seg.config import Config
from carvana_seg.core.experiment import experiment_config, load_fold_model
from carvana_seg.core.oof import blend_upsampled
from carvana_seg.core.views import parse_tta, predict_probs, to_levels
from carvana_seg.data.dataset import build_transform
from carvana_seg.data.layout import CarvanaLayout, image_size, read_image
from carvana_seg.data.sources import resize_image
from carvana_seg.errors import PipelineError
from carvana_seg.inference.check import check_submission
from carvana_seg.io_utils import atomic_path
from carvana_seg.recipe.postprocess import apply_postprocess
from carvana_seg.recipe.refine import refine_levels
from carvana_seg.rle import rle_encode

CHUNK_IMAGES = 256


@dataclass
class RecipeMember:
    cfg: Config
    weight: float
    models: list[torch.nn.Module]


class TestImages(Dataset):
    """Test images decoded once and resized to each member's training size."""

    def __init__(self, layout: CarvanaLayout, ids: list[str], sizes: list[tuple[int, int]]):
        self.layout, self.ids, self.sizes = layout, ids, sizes
        self.transform = build_transform(train=False)
        self.largest = max(sizes, key=lambda hw: hw[0] * hw[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        path = self.layout.image_path(self.ids[i], "test")
        image = read_image(path, draft_size=(self.largest[1], self.largest[0]))
        views = [self.transform(image=resize_image(image, hw))["image"] for hw in self.sizes]
        return {"views": views, "size": torch.tensor(image_size(path)), "i": i}


def load_recipe(path: str | Path, device: torch.device, data_root: str | None) -> tuple[dict, list[RecipeMember]]:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"recipe {path} not found: write one with scripts/tune.py")
    recipe = json.loads(path.read_text())
    members = []
    for entry in recipe["members"]:
        cfg = experiment_config(entry["exp"], entry["runs_dir"])
        if entry["weight"] > 0:
            models = [load_fold_model(cfg, fold, device) for fold in range(entry["folds"])]
            members.append(RecipeMember(cfg, entry["weight"], models))
    recipe["data_root"] = data_root or recipe["data_root"]
    return recipe, members


def predict_member(member: RecipeMember, images: torch.Tensor, views: list[str]) -> np.ndarray:
    """Mean probability over the member's fold models, as uint8 levels at its training size."""
    probs = sum(predict_probs(model, images, views) for model in member.models) / len(member.models)
    return to_levels(probs).cpu().numpy()


def encode_image(levels: list[np.ndarray], weights: list[float], size: tuple[int, int], recipe: dict, photo: Path) -> str:
    """Blend the members at original size, refine, threshold and post-process exactly as
    tuning did, then RLE-encode."""
    blended = refine_levels(blend_upsampled(levels, weights, size), photo, recipe.get("refine"))
    mask = (blended >= recipe["threshold_level"]).astype(np.uint8)
    return rle_encode(apply_postprocess(mask, recipe["postprocess"]))


def predict_chunk(
    members: list[RecipeMember], recipe: dict, dataset: TestImages, indices: list[int], device: torch.device, pool: ThreadPoolExecutor, workers: int, batch_size: int
) -> list[str]:
    """CSV lines `img,rle` for one chunk, in order."""
    views = parse_tta(recipe["tta"])
    weights = [m.weight for m in members]
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    futures = []
    for batch in loader:
        per_member = [predict_member(m, batch["views"][k].to(device, non_blocking=True), views) for k, m in enumerate(members)]
        for j, i in enumerate(batch["i"].tolist()):
            size = tuple(int(s) for s in batch["size"][j])
            levels = [p[j] for p in per_member]
            photo = dataset.layout.image_path(dataset.ids[i], "test")
            futures.append((i, pool.submit(encode_image, levels, weights, size, recipe, photo)))
    return [f"{dataset.ids[i]}.jpg,{future.result()}\n" for i, future in futures]


def predict_submission(
    recipe_path: str | Path, data_root: str | None = None, out: str | Path | None = None, compress: bool = False,
    batch_size: int = 4, workers: int = 2, chunk_images: int = CHUNK_IMAGES,
) -> Path | None:
    """Write the submission (resuming from finished chunks); returns its path on the main process."""
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as Accelerator reads it
    recipe, members = load_recipe(recipe_path, state.device, data_root)
    layout = CarvanaLayout(recipe["data_root"])
    ids = layout.test_ids  # a listed image that is missing fails loudly when it is read
    if not (layout.root / "test").is_dir():
        raise PipelineError(f"{layout.root / 'test'} is missing: predict needs test/ beside sample_submission.csv")
    out = Path(out) if out else Path(recipe_path).with_name(recipe["name"] + (".csv.gz" if compress else ".csv"))
    parts_dir = out.with_name(out.name + ".parts")
    if state.is_main_process:
        claim_parts_dir(parts_dir, recipe)
    state.wait_for_everyone()
    dataset = TestImages(layout, ids, [m.cfg.data.hw for m in members])
    chunks = [list(range(start, min(start + chunk_images, len(ids)))) for start in range(0, len(ids), chunk_images)]
    mine = [c for c in range(len(chunks)) if c % state.num_processes == state.process_index]
    todo = [c for c in mine if not (parts_dir / f"chunk-{c:06d}.csv").is_file()]
    if len(todo) < len(mine):
        state.print(f"resuming: {len(mine) - len(todo)} of {len(mine)} chunks already written in {parts_dir}")
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for c in tqdm(todo, desc="test chunks", disable=not state.is_local_main_process):
            lines = predict_chunk(members, recipe, dataset, chunks[c], state.device, pool, workers, batch_size)
            with atomic_path(parts_dir / f"chunk-{c:06d}.csv") as tmp:
                tmp.write_text("".join(lines))
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    first = image_size(layout.image_path(ids[0], "test"))
    with atomic_path(out) as tmp:
        with (gzip.open(tmp, "wt", newline="") if compress else open(tmp, "w", newline="")) as handle:
            handle.write("img,rle_mask\n")
            for c in range(len(chunks)):
                handle.write((parts_dir / f"chunk-{c:06d}.csv").read_text())
        problems = check_submission(tmp, layout.root / "sample_submission.csv", first)
        if problems:
            raise PipelineError(f"{out} failed validation and was not written:\n" + "\n".join(problems))
    shutil.rmtree(parts_dir)
    return out


def claim_parts_dir(parts_dir: Path, recipe: dict) -> None:
    """Keep finished chunks only if they were made by this very recipe and data."""
    stamp = parts_dir / "recipe.json"
    text = json.dumps(recipe, sort_keys=True)
    if parts_dir.is_dir() and (not stamp.is_file() or stamp.read_text() != text):
        print(f"{parts_dir} holds chunks of a different recipe or data: starting over")
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        with atomic_path(stamp) as tmp:
            tmp.write_text(text)
