"""The offline inference bundle: one folder that predicts a recipe's submission anywhere.

Why: a Kaggle notebook has no internet, no runs/ and no oof/; competitors upload the trained
weights as a dataset and predict there. `export_bundle` copies what the recipe needs into
one folder, and `load_bundle` gives back the recipe with its members read from that folder,
so `predict.py --bundle` runs the very chain `--recipe` runs, on the very weights (byte copies).

    <bundle>/manifest.json                          each file's size and sha256, the package version that wrote it,
                                                    each member's training size (and ONNX check)
    <bundle>/recipe.json                            the recipe; its members' runs_dir is "runs", relative to the bundle
    <bundle>/runs/<exp>/config.yaml                 the config each member was trained with
    <bundle>/runs/<exp>/fold<k>/model.safetensors   the fold's weights, its config in the metadata
    <bundle>/runs/<exp>/fold<k>/model.onnx          with --onnx (inference/onnx_backend.py)

A bundle is checked against its manifest before anything is loaded: a changed, missing or
extra file is refused, naming it, so a half-uploaded dataset or a fold swapped in from
another run cannot make a submission. Export writes into a temporary folder beside the
target and renames it into place only when complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from carvana_seg import __version__
from carvana_seg.core.experiment import experiment_config, fold_weights
from carvana_seg.errors import PipelineError
from carvana_seg.inference.onnx_backend import ONNX_NAME, export_onnx, view_sizes
from carvana_seg.io_utils import atomic_write_text
from carvana_seg.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint
from carvana_seg.models.fold_bn import fold_batchnorm
from carvana_seg.names import check_plain_name
from carvana_seg.recipe.recipe import Member, Recipe

BUNDLE_FORMAT = 1
MANIFEST_NAME = "manifest.json"
RECIPE_NAME = "recipe.json"
RUNS = "runs"  # the members' runs_dir inside the bundle
# Written into the folder by `kaggle datasets init`, read (and not uploaded) by the Kaggle CLI: never loaded here.
UPLOAD_METADATA = "dataset-metadata.json"


class BundleError(PipelineError):
    """A bundle folder does not match its manifest; the message names the file."""


def sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _copy_member(member: Member, root: Path, views: list[str] | None) -> dict:
    """Copy one member's config and fold weights into `root`/runs/<exp>/; with `views`, export
    each fold to ONNX too, checked at the sizes those TTA views feed it."""
    check_plain_name(member.exp, "recipe members[].exp")  # it names a folder of the bundle
    cfg = experiment_config(member.exp, member.runs_dir)
    cfg.exp.runs_dir = member.runs_dir
    dest = root / RUNS / member.exp
    dest.mkdir(parents=True)
    shutil.copyfile(Path(member.runs_dir) / member.exp / CONFIG_NAME, dest / CONFIG_NAME)
    entry = {"exp": member.exp, "folds": member.folds, "weight": member.weight, "size": cfg.data.size, "model": cfg.model.name}
    diffs = []
    for fold in range(member.folds):
        source = fold_weights(cfg, fold)
        (dest / f"fold{fold}").mkdir()
        shutil.copyfile(source, dest / f"fold{fold}" / WEIGHTS_NAME)
        if views is not None:
            model, _ = load_checkpoint(source)  # folded as predict folds it (core/experiment.load_fold_model)
            diffs.append(export_onnx(fold_batchnorm(model.eval()), dest / f"fold{fold}" / ONNX_NAME, view_sizes(cfg.data.hw, views)))
    if views is not None:
        entry["onnx_max_abs_diff"] = diffs  # per fold, on probabilities, torch vs onnxruntime (fp32)
    return entry


def _file_table(root: Path) -> dict[str, dict]:
    return {
        path.relative_to(root).as_posix(): {"size": path.stat().st_size, "sha256": sha256(path)}
        for path in sorted(root.rglob("*")) if path.is_file() and path.name != MANIFEST_NAME
    }


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished bundle onto `out`; an older bundle there is replaced, anything else refused."""
    if not out.exists():
        tmp.rename(out)
        return
    if not (out / MANIFEST_NAME).is_file():
        raise BundleError(f"{out} exists and is not a bundle (no {MANIFEST_NAME}): choose another --out")
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    out.rename(old / out.name)
    tmp.rename(out)
    shutil.rmtree(old)


def export_bundle(recipe_path: str | Path, out: str | Path, onnx: bool = False) -> dict:
    """Write the bundle of the recipe at `recipe_path` to `out` (a plain folder name); returns its manifest."""
    out = Path(out)
    name = check_plain_name(out.name, "--out")
    recipe = Recipe.load(recipe_path)
    kept = [m for m in recipe.members if m.weight > 0]  # prediction drops the weightless members too
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the bundle from a dataset uploader running as another user
        members = [_copy_member(m, tmp, recipe.views if onnx else None) for m in kept]
        recipe.replace(members=tuple(dataclasses.replace(m, runs_dir=RUNS) for m in kept)).save(tmp / RECIPE_NAME)
        manifest = {
            "format": BUNDLE_FORMAT,
            "name": name,
            "recipe": recipe.name,
            "written_by": {"package": "carvana-seg", "version": __version__, "torch": torch.__version__},
            "onnx": onnx,
            "members": members,
            "files": _file_table(tmp),
        }
        atomic_write_text(tmp / MANIFEST_NAME, json.dumps(manifest, indent=2))
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def verify_bundle(root: str | Path) -> dict:
    """The bundle's manifest, once every file matches it: a missing, extra or changed file is
    an error naming it (the Kaggle CLI's dataset-metadata.json aside)."""
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST_NAME}): write one with scripts/export.py")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        format_ = manifest["format"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise BundleError(f"{manifest_path}: not a bundle manifest ({type(err).__name__}: {err})") from None
    if format_ != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: format {format_!r} is not {BUNDLE_FORMAT}: export the bundle again")
    for rel in files:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(f"{manifest_path}: {rel!r} is not a path inside the bundle")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()} - {MANIFEST_NAME, UPLOAD_METADATA}
    for rel in sorted(set(files) - present):
        raise BundleError(f"{root / rel}: missing ({manifest_path} lists it)")
    for rel in sorted(present - set(files)):
        raise BundleError(f"{root / rel}: not in {manifest_path}: a bundle holds only the files export wrote")
    for rel, entry in sorted(files.items()):
        path = root / rel
        if path.stat().st_size != entry["size"] or sha256(path) != entry["sha256"]:
            raise BundleError(f"{path}: does not match {manifest_path} (changed since export)")
    return manifest


def load_bundle(root: str | Path) -> Recipe:
    """The bundle's recipe, verified, with its members' runs_dir resolved inside the bundle."""
    root = Path(root)
    verify_bundle(root)
    path = root / RECIPE_NAME
    recipe = Recipe.from_json(json.loads(path.read_text()), str(path))
    return recipe.replace(members=tuple(dataclasses.replace(m, runs_dir=str(root / m.runs_dir)) for m in recipe.members))


def bundle_bytes(manifest: dict) -> int:
    return sum(entry["size"] for entry in manifest["files"].values())
