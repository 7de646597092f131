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
extra file, or a symbolic link, is refused, naming it, so a half-uploaded dataset or a fold
swapped in from another run cannot make a submission; every file the recipe's members name
must be one the manifest lists, so a recipe cannot point outside the bundle. Export writes
into a temporary folder beside the target and renames it into place only when complete; it
replaces a folder only when that is a bundle export wrote (its manifest's `kind`, and nothing
in it the manifest does not list) or is empty, so it never deletes anything else; that is
checked before anything is copied, and again before the swap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import torch

from carvana_seg import __version__
from carvana_seg.config import Config
from carvana_seg.store.experiment import experiment_config, fold_weights, member_configs
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.errors import PipelineError
from carvana_seg.inference.onnx_backend import export_onnx, view_sizes
from carvana_seg.io_utils import atomic_write_text, blocking_parent
from carvana_seg.models.checkpoint import load_checkpoint
from carvana_seg.models.fold_bn import fold_batchnorm
from carvana_seg.names import check_plain_name
from carvana_seg.recipe.recipe import Member, Recipe

BUNDLE_KIND = "carvana-seg inference bundle"  # the manifest's "kind": what export may replace
BUNDLE_FORMAT = 2  # 2: the manifest carries its kind (1: without it)
SHA256 = re.compile(r"[0-9a-f]{64}")
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


def _copy_member(member: Member, cfg: Config, root: Path, views: list[str] | None) -> dict:
    """Copy one member's config and fold weights (`cfg`: its runs' config) into `root`/runs/<exp>/,
    named as the experiment store names them; with `views`, export each fold to ONNX too,
    checked at the sizes those TTA views feed it."""
    check_plain_name(member.exp, "recipe members[].exp")  # it names a folder of the bundle
    dest = ExperimentPaths.runs_of(root / RUNS, member.exp)
    dest.run_dir.mkdir(parents=True)
    shutil.copyfile(ExperimentPaths.runs_of(member.runs_dir, member.exp).config, dest.config)
    entry = {"exp": member.exp, "folds": member.folds, "weight": member.weight, "size": str(cfg.data.size), "model": cfg.model.name}
    diffs = []
    for fold in range(member.folds):
        source = fold_weights(cfg, fold)
        dest.fold_dir(fold).mkdir()
        shutil.copyfile(source, dest.weights(fold))
        if views is not None:
            model, _ = load_checkpoint(source)  # folded as predict folds it (store/experiment.load_fold_model)
            diffs.append(export_onnx(fold_batchnorm(model.eval()), dest.onnx(fold), view_sizes(cfg.data.size, views), channels=cfg.model.channels))
    if views is not None:
        entry["onnx_max_abs_diff"] = diffs  # per fold, on probabilities, torch vs onnxruntime (fp32)
    return entry


def _file_table(root: Path) -> dict[str, dict]:
    return {
        path.relative_to(root).as_posix(): {"size": path.stat().st_size, "sha256": sha256(path)}
        for path in sorted(root.rglob("*")) if path.is_file() and path.name != MANIFEST_NAME
    }


def _check_file_table(files: object, manifest_path: Path) -> None:
    """`files` must map paths inside the bundle to {"size": bytes, "sha256": hex digest}."""
    if not isinstance(files, dict):
        raise BundleError(f"{manifest_path}: files: expected an object of path -> {{size, sha256}}, got {json.dumps(files)[:60]}")
    for rel, entry in files.items():
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            raise BundleError(f"{manifest_path}: {rel!r} is not a path inside the bundle")
        size = entry.get("size") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise BundleError(
                f"{manifest_path}: files[{rel!r}]: expected {{\"size\": bytes, \"sha256\": 64 hex digits}}, got {json.dumps(entry)[:80]}"
            )


def _read_manifest(root: Path) -> dict:
    """The manifest of the bundle at `root`, its kind, format and file table checked."""
    path = root / MANIFEST_NAME
    if path.is_symlink():
        raise BundleError(f"{path}: a symbolic link (a bundle holds only plain files)")
    if not path.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST_NAME}): write one with scripts/export.py")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: not a bundle manifest ({type(err).__name__}: {err})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != BUNDLE_KIND:
        raise BundleError(f"{path}: not a manifest scripts/export.py wrote: its \"kind\" is not {BUNDLE_KIND!r} (from an older version? export it again)")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: format {manifest.get('format')!r} is not {BUNDLE_FORMAT}: export the bundle again")
    _check_file_table(manifest.get("files"), path)
    return manifest


def _first_foreign(root: Path, files: dict) -> str | None:
    """The first thing in `root` its manifest does not account for, as '<path>: why' (None when
    there is none): a symbolic link, a file it does not list (the manifest itself and the Kaggle
    CLI's dataset-metadata.json aside), or a folder that holds no listed file. Files and links
    are named before folders."""
    folders = {parent.as_posix() for rel in files for parent in PurePosixPath(rel).parents}
    for path in sorted(root.rglob("*"), key=lambda p: (p.is_dir() and not p.is_symlink(), p)):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            return f"{path}: a symbolic link (a bundle holds only plain files)"
        if rel not in (folders if path.is_dir() else {*files, MANIFEST_NAME, UPLOAD_METADATA}):
            return f"{path}: not in {root / MANIFEST_NAME}: a bundle holds only the files export wrote"
    return None


def _not_a_bundle(out: Path) -> str | None:
    """Why the existing `out` is not a bundle export wrote, naming the first foreign file (None
    when it is one, or an empty folder: nothing to lose)."""
    if out.is_symlink() or not out.is_dir():
        return f"{out} is {'a symbolic link' if out.is_symlink() else 'not a folder'}"
    if not any(out.iterdir()):
        return None
    if not (out / MANIFEST_NAME).exists() and not (out / MANIFEST_NAME).is_symlink():
        first = min(out.rglob("*"), key=lambda p: (p.is_dir(), p), default=None)
        return f"no {MANIFEST_NAME}" + (f"; it holds {first}" if first else "")
    try:
        return _first_foreign(out, _read_manifest(out)["files"])
    except BundleError as err:
        return str(err)


def _check_replaceable(out: Path) -> bool:
    """Whether `out` exists; refused when it does and is not a bundle export wrote (or an empty folder)."""
    if not out.exists() and not out.is_symlink():
        return False
    why = _not_a_bundle(out)
    if why:
        raise BundleError(f"{out} exists and is not a bundle export wrote: {why}; choose another --out, or move it away yourself")
    return True


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished bundle onto `out`. What is there is replaced only when it is a bundle
    export wrote (its dataset-metadata.json, which holds the Kaggle dataset's title and id, is
    carried over) or an empty folder; anything else is refused, naming the first file that is
    not the bundle's (checked again: it may have changed while the bundle was written)."""
    if not _check_replaceable(out):
        tmp.rename(out)
        return
    if (out / UPLOAD_METADATA).is_file():
        shutil.copy2(out / UPLOAD_METADATA, tmp / UPLOAD_METADATA)
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    out.rename(old / out.name)
    tmp.rename(out)
    shutil.rmtree(old)


def export_bundle(recipe_path: str | Path, out: str | Path, onnx: bool = False) -> dict:
    """Write the bundle of the recipe at `recipe_path` to `out` (a plain folder name); returns its
    manifest. An `out` that cannot be written or replaced is refused before anything is copied."""
    out, typed = Path(out), str(out)
    if not out.name:
        raise PipelineError(f"--out {typed!r}: name the bundle folder itself, e.g. bundles/NAME (its last part a plain name)")
    name = check_plain_name(out.name, f"--out {typed!r}")
    blocker = blocking_parent(out)
    if blocker:
        raise PipelineError(f"--out {typed!r}: {blocker} is not a folder, so no bundle can be written under it; choose another --out")
    _check_replaceable(out)
    recipe = Recipe.load(recipe_path)
    kept = [m for m in recipe.members if m.weight > 0]  # prediction drops the weightless members too
    configs = member_configs(kept, str(recipe_path))  # every run found and matching before anything is copied
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the bundle from a dataset uploader running as another user
        members = [_copy_member(m, cfg, tmp, recipe.views if onnx else None) for m, cfg in zip(kept, configs)]
        recipe.replace(members=tuple(dataclasses.replace(m, runs_dir=RUNS) for m in kept)).save(tmp / RECIPE_NAME)
        manifest = {
            "kind": BUNDLE_KIND,
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
    """The bundle's manifest, once every file matches it: a missing, extra or changed file, or a
    symbolic link, is an error naming it (the Kaggle CLI's dataset-metadata.json aside)."""
    root = Path(root)
    manifest = _read_manifest(root)
    manifest_path = root / MANIFEST_NAME
    for rel in sorted(manifest["files"]):
        if not (root / rel).exists() and not (root / rel).is_symlink():
            raise BundleError(f"{root / rel}: missing ({manifest_path} lists it)")
    foreign = _first_foreign(root, manifest["files"])
    if foreign:
        raise BundleError(foreign)
    for rel, entry in sorted(manifest["files"].items()):
        path = root / rel
        if not path.is_file():
            raise BundleError(f"{path}: not a plain file ({manifest_path} lists it as one)")
        if path.stat().st_size != entry["size"] or sha256(path) != entry["sha256"]:
            raise BundleError(f"{path}: does not match {manifest_path} (changed since export)")
    return manifest


def _check_member(root: Path, member: Member, files: dict, where: str) -> None:
    """Every file `member` names must be one the manifest lists: its runs_dir a folder inside
    the bundle, its config and fold weights listed, and the config naming the member's
    experiment (the fold weights are found by that name)."""
    runs = PurePosixPath(member.runs_dir)
    if runs.is_absolute() or ".." in runs.parts:
        raise BundleError(f"{where}.runs_dir: {member.runs_dir!r} is not a folder inside the bundle (export writes {RUNS!r})")
    named_files = ExperimentPaths.runs_of(runs, member.exp)
    for path in (named_files.config, *(named_files.weights(k) for k in range(member.folds))):
        rel = path.as_posix()
        if rel not in files:
            raise BundleError(f"{where} ({member.exp}): {root / rel} is not a file {root / MANIFEST_NAME} lists")
    named = experiment_config(member.exp, root / runs).exp.name
    if named != member.exp:
        raise BundleError(f"{where} ({member.exp}): {root / named_files.config} is the config of {named!r}: export the bundle again")


def load_bundle(root: str | Path) -> Recipe:
    """The bundle's recipe, verified, with its members' runs_dir resolved inside the bundle;
    a member naming a file the manifest does not list is refused, naming the member."""
    root = Path(root)
    files = verify_bundle(root)["files"]
    path = root / RECIPE_NAME
    if RECIPE_NAME not in files:
        raise BundleError(f"{path}: missing ({root / MANIFEST_NAME} does not list it)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: not a recipe ({type(err).__name__}: {err})") from None
    recipe = Recipe.from_json(raw, str(path))
    for k, member in enumerate(recipe.members):
        _check_member(root, member, files, f"{path}: members[{k}]")
    return recipe.replace(members=tuple(dataclasses.replace(m, runs_dir=str(root / m.runs_dir)) for m in recipe.members))


def bundle_bytes(manifest: dict) -> int:
    return sum(entry["size"] for entry in manifest["files"].values())
