"""The offline bundle: a copied bundle alone predicts the recipe's submission byte for byte,
a bundle that does not match its manifest is refused naming the file, and the ONNX backend
reaches the torch backend's masks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tree

from carvana_seg.ops.metrics import dice_per_image
from carvana_seg.errors import PipelineError
from carvana_seg.inference import onnx_backend
from carvana_seg.inference.bundle import BundleError, export_bundle, load_bundle, sha256, verify_bundle
from carvana_seg.inference.submit import predict_submission
from carvana_seg.recipe.recipe import Member, Recipe, Refine
from carvana_seg.ops.rle import rle_decode

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def blend_recipe(runs: Path, data: Path, name: str, tta: str = "hflip") -> Recipe:
    """Both tiny experiments blended, refined and post-processed, plus a weightless one export leaves out."""
    members = (Member("plain", str(runs), 0.6, 2), Member("se", str(runs), 0.4, 2), Member("se", str(runs), 0.0, 2))
    return Recipe(name, members, str(data), tta, 120, Refine(4, 1e-3), ("largest_component",))


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("bundle")
    blend_recipe(trained / "runs", trained / "data", "blend").save(work / "blend.recipe.json")
    export_bundle(work / "blend.recipe.json", work / "bundles" / "blend")
    return work / "bundles" / "blend"


def test_a_copied_bundle_predicts_the_recipes_submission_byte_for_byte(trained, tmp_path):
    runs = tmp_path / "work" / "runs"  # a run folder that disappears after export
    shutil.copytree(trained / "runs", runs)
    recipe_path = tmp_path / "work" / "submissions" / "blend.recipe.json"
    blend_recipe(runs, trained / "data", "blend").save(recipe_path)
    reference = predict_submission(recipe_path, out=tmp_path / "reference.csv", workers=0, chunk_images=2).read_bytes()
    manifest = export_bundle(recipe_path, tmp_path / "work" / "bundles" / "blend")
    assert [(m["exp"], m["folds"], m["size"]) for m in manifest["members"]] == [("plain", 2, "64x96"), ("se", 2, "64x96")]
    assert manifest["written_by"]["version"] and not list((tmp_path / "work" / "bundles").glob(".*"))  # no temp folder left
    shutil.copytree(tmp_path / "work" / "bundles" / "blend", tmp_path / "kaggle" / "input" / "blend")
    shutil.rmtree(tmp_path / "work")
    working = tmp_path / "kaggle" / "working"
    working.mkdir()
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "predict.py"), "--bundle", "../input/blend", f"data.root={trained / 'data'}", "--workers", "0", "--chunk-images", "2"],
        cwd=working, env=ENV, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (working / "blend.csv").read_bytes() == reference
    assert sorted(p.name for p in working.iterdir()) == ["blend.csv"]


def tamper(root: Path, how: str) -> Path:
    weights = root / "runs" / "plain" / "fold1" / "model.safetensors"
    if how == "changed weights":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
    elif how == "missing weights":
        weights.unlink()
    elif how == "extra weights":
        shutil.copytree(weights.parent, root / "runs" / "plain" / "fold2")
    elif how == "kaggle metadata":  # `kaggle datasets init -p <bundle>` writes it; the CLI does not upload it
        (root / "dataset-metadata.json").write_text('{"title": "blend", "id": "me/blend"}')
    elif how == "changed recipe":
        recipe = root / "recipe.json"
        recipe.write_text(recipe.read_text().replace('"threshold_level": 120', '"threshold_level": 121'))
    return root


@pytest.mark.parametrize(
    "how, named, problem",
    [
        ("changed weights", "runs/plain/fold1/model.safetensors", "does not match"),
        ("missing weights", "runs/plain/fold1/model.safetensors", "missing"),
        ("extra weights", "runs/plain/fold2/model.safetensors", "not in"),
        ("changed recipe", "recipe.json", "does not match"),
        ("kaggle metadata", None, None),  # accepted
    ],
)
def test_a_tampered_bundle_is_refused_naming_the_file(bundle, tmp_path, how, named, problem):
    copy = tamper(Path(shutil.copytree(bundle, tmp_path / "blend")), how)
    if named is None:
        assert load_bundle(copy).name == "blend"
        return
    with pytest.raises(BundleError) as err:
        load_bundle(copy)
    message = str(err.value)
    assert message.startswith(f"{copy / named}: {problem}") and "\n" not in message, message


def predict_from_bundle(copy: Path, trained: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`predict.py --bundle COPY` on the trained data, as a user types it, writing tmp_path/s.csv."""
    return subprocess.run(
        [sys.executable, "scripts/predict.py", "--bundle", str(copy), f"data.root={trained / 'data'}", "--out", str(tmp_path / "s.csv")],
        cwd=REPO, env=ENV, capture_output=True, text=True, check=False,
    )


def test_a_tampered_bundle_is_one_line_from_predict(bundle, trained, tmp_path):
    copy = tamper(Path(shutil.copytree(bundle, tmp_path / "blend")), "changed weights")
    done = predict_from_bundle(copy, trained, tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: {copy / 'runs/plain/fold1/model.safetensors'}: does not match {copy / 'manifest.json'} (changed since export)"
    assert not (tmp_path / "s.csv").exists()


def test_export_refuses_a_path_as_bundle_name_and_a_folder_that_is_not_a_bundle(bundle, tmp_path):
    recipe = tmp_path / "blend.recipe.json"
    shutil.copy(bundle.parent.parent / "blend.recipe.json", recipe)
    with pytest.raises(BundleError, match=r"not a bundle \(no manifest.json\)"):
        verify_bundle(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"notes exists and is not a bundle"):
        export_bundle(recipe, tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    with pytest.raises(Exception, match="is not a plain name"):
        export_bundle(recipe, tmp_path / "bad name")


def test_onnx_bundle_matches_torch_and_the_onnxruntime_backend_reaches_the_same_masks(trained, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="ONNX export needs onnx and onnxruntime (pinned in requirements.txt)")
    recipe_path = tmp_path / "onnx.recipe.json"
    blend_recipe(trained / "runs", trained / "data", "onnx", tta="hflip,scale0.75").save(recipe_path)  # 0.75: the net also sees 48x72
    manifest = export_bundle(recipe_path, tmp_path / "bundles" / "onnx", onnx=True)
    diffs = [d for m in manifest["members"] for d in m["onnx_max_abs_diff"]]
    assert len(diffs) == 4 and max(diffs) < onnx_backend.ONNX_TOLERANCE, diffs
    assert sum(name.endswith("model.onnx") for name in manifest["files"]) == 4
    recipe = load_bundle(tmp_path / "bundles" / "onnx")
    csvs = {
        backend: predict_submission(recipe, out=tmp_path / f"{backend}.csv", workers=0, backend=backend).read_text().splitlines()[1:]
        for backend in ("torch", "onnxruntime")
    }
    assert len(csvs["torch"]) == 4
    for torch_row, onnx_row in zip(csvs["torch"], csvs["onnxruntime"]):
        masks = [rle_decode(row.split(",")[1], (48, 72)) for row in (torch_row, onnx_row)]
        assert masks[0].sum() > 0
        assert dice_per_image(masks[1][None], masks[0][None])[0] >= 0.9999, torch_row.split(",")[0]

    monkeypatch.setattr(onnx_backend, "ONNX_TOLERANCE", -1.0)  # the check can fail: then export names the file
    with pytest.raises(Exception, match=r"fold0/model.onnx: onnxruntime's probabilities differ from torch's"):
        export_bundle(recipe_path, tmp_path / "bundles" / "strict", onnx=True)
    assert not (tmp_path / "bundles" / "strict").exists()


def test_the_onnxruntime_backend_without_onnx_files_says_how_to_make_them(bundle):
    pytest.importorskip("onnxruntime", reason="ONNX export needs onnx and onnxruntime (pinned in requirements.txt)")
    with pytest.raises(Exception, match=r"plain fold 0: no ONNX model at .*fold0/model.onnx: export the bundle with scripts/export.py --onnx"):
        predict_submission(load_bundle(bundle), out=bundle.parent / "x.csv", workers=0, backend="onnxruntime")
    json.loads((bundle / "manifest.json").read_text())  # untouched


def restamp(root: Path, rel: str) -> None:
    """Set the manifest's size and sha256 of `rel` to the file's, as someone editing a bundle by hand would."""
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][rel] = {"size": (root / rel).stat().st_size, "sha256": sha256(root / rel)}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.mark.parametrize("key, value", [("runs_dir", "absolute"), ("runs_dir", "../../runs"), ("folds", 3)])
def test_a_recipe_member_outside_the_manifest_is_refused_even_when_the_manifest_was_updated(bundle, trained, tmp_path, key, value):
    copy = Path(shutil.copytree(bundle, tmp_path / "up" / "kaggle" / "blend"))
    shutil.copytree(trained / "runs", tmp_path / "up" / "runs")  # what ../../runs reaches: weights the manifest never checked
    value = str(tmp_path / "up" / "runs") if value == "absolute" else value
    recipe = json.loads((copy / "recipe.json").read_text())
    recipe["members"][0][key] = value
    (copy / "recipe.json").write_text(json.dumps(recipe, indent=2))
    restamp(copy, "recipe.json")
    verify_bundle(copy)  # every file matches the manifest
    before = tree(tmp_path)
    with pytest.raises(BundleError) as err:
        load_bundle(copy)
    where = f"{copy / 'recipe.json'}: members[0]"
    expected = (
        f"{where}.runs_dir: {value!r} is not a folder inside the bundle (export writes 'runs')" if key == "runs_dir"
        else f"{where} (plain): {copy / 'runs/plain/fold2/model.safetensors'} is not a file {copy / 'manifest.json'} lists"
    )
    assert str(err.value) == expected
    if str(value).startswith("/"):  # and from the command line: one line, exit 1, no submission
        done = predict_from_bundle(copy, trained, tmp_path)
        assert done.returncode == 1 and done.stderr.strip().splitlines() == [f"error: {expected}"], done.stderr
    assert tree(tmp_path) == before


def test_a_member_config_swapped_for_another_experiments_is_refused(bundle, tmp_path):
    copy = Path(shutil.copytree(bundle, tmp_path / "blend"))
    shutil.copyfile(copy / "runs/se/config.yaml", copy / "runs/plain/config.yaml")  # plain's weights would be looked up under runs/se
    restamp(copy, "runs/plain/config.yaml")
    with pytest.raises(BundleError) as err:
        load_bundle(copy)
    assert str(err.value) == f"{copy / 'recipe.json'}: members[0] (plain): {copy / 'runs/plain/config.yaml'} is the config of 'se': export the bundle again"


def break_manifest(manifest: dict, how: str) -> object:
    if how == "entry without sha256":
        del manifest["files"]["recipe.json"]["sha256"]
    elif how == "entry a string":
        manifest["files"]["recipe.json"] = "0" * 64
    elif how == "files a list":
        manifest["files"] = sorted(manifest["files"])
    elif how == "files null":
        manifest["files"] = None
    elif how == "no kind":
        del manifest["kind"]
    elif how == "a list":
        return [manifest]
    return manifest


@pytest.mark.parametrize(
    "how, problem",
    [
        ("entry without sha256", "files['recipe.json']: expected {\"size\": bytes, \"sha256\": 64 hex digits}, got {\"size\": "),
        ("entry a string", "files['recipe.json']: expected {\"size\": bytes, \"sha256\": 64 hex digits}, got \"000"),
        ("files a list", "files: expected an object of path -> {size, sha256}, got [\"recipe.json\", "),
        ("files null", "files: expected an object of path -> {size, sha256}, got null"),
        ("no kind", "not a manifest scripts/export.py wrote: its \"kind\" is not 'carvana-seg inference bundle'"),
        ("a list", "not a manifest scripts/export.py wrote"),
    ],
)
def test_a_malformed_manifest_is_one_line(bundle, trained, tmp_path, how, problem):
    copy = Path(shutil.copytree(bundle, tmp_path / "blend"))
    manifest_path = copy / "manifest.json"
    manifest_path.write_text(json.dumps(break_manifest(json.loads(manifest_path.read_text()), how)))
    before = tree(tmp_path)
    with pytest.raises(BundleError) as err:
        load_bundle(copy)
    message = str(err.value)
    assert message.startswith(f"{manifest_path}: {problem}") and "\n" not in message, message
    if how == "files null":
        done = predict_from_bundle(copy, trained, tmp_path)
        assert done.returncode == 1 and done.stderr.strip().splitlines() == [f"error: {message}"], done.stderr
    assert tree(tmp_path) == before


def test_export_replaces_nothing_but_a_bundle_it_wrote(bundle, tmp_path):
    recipe = bundle.parent.parent / "blend.recipe.json"
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "manifest.json").write_text("{}")
    (other / "sub" / "important.txt").write_text("mine")
    before = tree(tmp_path)
    done = subprocess.run([sys.executable, "scripts/export.py", "--recipe", str(recipe), "--out", str(other)], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {other} exists and is not a bundle export wrote: {other / 'manifest.json'}: not a manifest scripts/export.py wrote: "
        "its \"kind\" is not 'carvana-seg inference bundle' (from an older version? export it again); choose another --out, or move it away yourself"
    ]
    assert tree(tmp_path) == before  # no temporary folder left either

    old = Path(shutil.copytree(bundle, tmp_path / "old"))
    (old / "dataset-metadata.json").write_text('{"title": "blend", "id": "me/blend"}')  # kaggle datasets init: kept
    assert export_bundle(recipe, old)["kind"] == "carvana-seg inference bundle"
    assert (old / "dataset-metadata.json").read_text() == '{"title": "blend", "id": "me/blend"}' and load_bundle(old).name == "blend"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old", "other"]


@pytest.mark.parametrize("planted, named", [("notes.txt", "notes.txt"), ("runs/plain/empty/", "runs/plain/empty"), ("link", "link")])
def test_export_refuses_a_bundle_holding_anything_its_manifest_does_not_list(bundle, tmp_path, planted, named):
    old = Path(shutil.copytree(bundle, tmp_path / "old"))
    if planted.endswith("/"):
        (old / planted).mkdir()
    elif planted == "link":
        (old / planted).symlink_to(tmp_path / "elsewhere")
    else:
        (old / planted).write_text("mine")
    before = tree(tmp_path)
    with pytest.raises(BundleError) as err:
        export_bundle(bundle.parent.parent / "blend.recipe.json", old)
    why = "a symbolic link (a bundle holds only plain files)" if planted == "link" else f"not in {old / 'manifest.json'}: a bundle holds only the files export wrote"
    assert str(err.value) == f"{old} exists and is not a bundle export wrote: {old / named}: {why}; choose another --out, or move it away yourself"
    assert tree(tmp_path) == before


@pytest.mark.parametrize("out, message", [
    ("afile.txt/b", "--out 'afile.txt/b': afile.txt is not a folder, so no bundle can be written under it; choose another --out"),
    (".", "--out '.': name the bundle folder itself, e.g. bundles/NAME (its last part a plain name)"),
    ("notes", "notes exists and is not a bundle export wrote: notes/keep.txt: not in notes/manifest.json: a bundle holds only the files export wrote; "
              "choose another --out, or move it away yourself"),
])
def test_export_refuses_an_out_it_cannot_write_before_copying_anything(tmp_path, monkeypatch, out, message):
    """Refused before the recipe's members are read: their weights were never trained, so
    reaching them would be another error."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile.txt").write_text("mine")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    (tmp_path / "notes" / "manifest.json").write_text(json.dumps({"kind": "carvana-seg inference bundle", "format": 2, "files": {}}))
    Recipe("r", (Member("never_trained", "runs", 1.0, 2),), str(tmp_path)).save(tmp_path / "r.recipe.json")
    before = tree(tmp_path)
    with pytest.raises(PipelineError) as err:
        export_bundle("r.recipe.json", out)
    assert str(err.value) == message
    assert tree(tmp_path) == before


def test_export_fills_an_empty_folder(bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    manifest = export_bundle(bundle.parent.parent / "blend.recipe.json", tmp_path / "empty")
    assert verify_bundle(tmp_path / "empty") == manifest and sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
