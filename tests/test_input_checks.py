"""Inputs checked whole before a run writes anything: encoder weight files, every training
photo's and mask's header, train_masks/ against train_masks.csv, and photos that are not JPEGs.

Each case is fed through the command a user types (in-process through `carvana_seg.commands.cli.run`)
and checks the one printed line, the exit status, and that no experiment was claimed
(no runs/<exp>/config.yaml, no fold folder, no oof/<exp>).
"""

from __future__ import annotations

import gzip
import pickle
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import gif_claiming, jpeg_claiming
from carvana_seg.commands.cli import run
from carvana_seg.commands import train as train_command
from carvana_seg.config import ConfigError, load_config
from carvana_seg.data.folds import make_folds, write_folds
from carvana_seg.data.layout import CarvanaLayout, DataError, check_photos, write_mask_gif
from carvana_seg.inference import submit
from carvana_seg.recipe.tune import tune
from carvana_seg.models import build_model, check_encoder_weights
from carvana_seg.commands import train_fold as run_fold
from carvana_seg.training.cluster import check_experiments

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
SMP = ["model.name=smp", "model.arch=Unet", "model.encoder=resnet18"]
pytestmark = pytest.mark.filterwarnings(
    "ignore::PIL.Image.DecompressionBombWarning",  # pytest resets the filter layout.py sets
    "ignore:The image decoding and encoding capabilities of TorchVision are deprecated:DeprecationWarning",
)


class _Payload:
    """Unpickling this creates `marker`: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def work(tiny_layout, tmp_path) -> Path:
    """The tiny layout with its folds file; results go to tmp_path/runs and tmp_path/oof."""
    write_folds(make_folds(CarvanaLayout(tiny_layout), 2, seed=0), tiny_layout / "folds.csv")
    return tmp_path


def common(work: Path, *extra: str) -> list[str]:
    return [f"data.root={work / 'tiny'}", f"data.cache_dir={work / 'cache'}", f"exp.runs_dir={work / 'runs'}",
            f"exp.oof_dir={work / 'oof'}", "exp.name=x", *extra]


def one_line(main, capsys) -> tuple[int, str]:
    """(exit status, the one line) of `cli.run(main)`: `error: ...` (1) or argparse's `config error: ...` (2)."""
    with pytest.raises(SystemExit) as exit_:
        run(main)
    code, err = exit_.value.code, capsys.readouterr().err
    text = code if isinstance(code, str) else err.strip()
    assert "\n" not in text.strip() and "Traceback" not in err, err
    return (1 if isinstance(code, str) else code), text.strip()


def train_fold_main(work: Path, *extra: str):
    return lambda: run_fold.main(["--config", str(TINY), "--fold", "0", *common(work, *extra)])


def train_cv_main(work: Path, monkeypatch, *flags: str):
    monkeypatch.setattr(sys, "argv", ["train_cv.py", "--config", str(TINY), *flags, *common(work)])
    return train_command.main


def assert_nothing_claimed(work: Path) -> None:
    assert not (work / "runs").exists() and not (work / "oof").exists(), sorted(p.name for p in work.rglob("*"))


# ---- model.encoder_weights: the whole file checked before the experiment is claimed ----------
def encoder_state(*overrides: str) -> dict[str, torch.Tensor]:
    cfg = load_config(None, [*SMP, *overrides]).model
    return {k: v.clone() for k, v in build_model(cfg).model.encoder.state_dict().items()}


def bad_weight_files(folder: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """{case: (file, what its one line must say)}; the pickles create `marker` if ever unpickled."""
    folder.mkdir()
    good = folder / "good.safetensors"
    save_file(encoder_state(), str(good))
    save_file(encoder_state("model.in_channels=1"), str(folder / "one_channel.safetensors"))
    (folder / "truncated.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size - 100])
    (folder / "pickle.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    (folder / "enc.pt.gz").write_bytes(gzip.compress(pickle.dumps(_Payload(marker))))
    return {
        "wrong shape": (folder / "one_channel.safetensors", r"does not fit encoder 'resnet18': 1 shapes differ: conv1\.weight"),
        "truncated": (folder / "truncated.safetensors", "is not a complete safetensors file"),
        "pickle renamed": (folder / "pickle.safetensors", "is not a complete safetensors file"),
        "compressed pickle": (folder / "enc.pt.gz", "is not a .safetensors file"),
    }


def test_each_bad_encoder_file_is_one_line_naming_it_and_claims_nothing(work, capsys):
    marker = work / "unpickled"
    for case, (path, says) in bad_weight_files(work / "weights", marker).items():
        code, line = one_line(train_fold_main(work, *SMP, f"model.encoder_weights={path}"), capsys)
        assert code == 1 and line.startswith(f"error: model.encoder_weights: {path} "), (case, line)
        assert re.search(says, line), (case, line)
        assert_nothing_claimed(work)
    assert not marker.exists(), "an encoder weights file was unpickled"
    check_encoder_weights(load_config(None, [*SMP, f"model.encoder_weights={work / 'weights' / 'good.safetensors'}"]).model)


@pytest.mark.parametrize("value", ["evil.pth", "sub/enc.PTH", "enc.Pt"])
def test_pickle_suffixes_in_any_case_and_relative_paths_are_config_errors(work, capsys, monkeypatch, value):
    monkeypatch.chdir(work)
    marker = work / "unpickled"
    Path(value).parent.mkdir(exist_ok=True)
    Path(value).write_bytes(pickle.dumps(_Payload(marker)))
    code, line = one_line(train_fold_main(work, *SMP, f"model.encoder_weights={value}"), capsys)
    assert code == 2 and line == (
        f"config error: model.encoder_weights: {value!r} is a pickled checkpoint, never loaded here: "
        "save the encoder's state dict with safetensors.torch.save_file"
    )
    assert_nothing_claimed(work)
    assert not marker.exists()


@pytest.mark.parametrize("overrides, says", [
    (["model.encoder_weights=imagenett"], r"'imagenett' is neither a weight set smp downloads for 'resnet18' \(imagenet, ssl, swsl\)"),
    (["model.encoder_weights=weights"], r"'weights' is neither a weight set .* nor a local file \(a path to a \.safetensors file or a folder"),
    (["model.encoder=resnet999"], r"unknown model\.encoder 'resnet999'"),
    (["model.encoder_weights=/nowhere/enc.safetensors"], r"/nowhere/enc\.safetensors not found"),
])
def test_unknown_names_are_one_line_before_the_claim(work, capsys, overrides, says):
    with pytest.raises(ConfigError, match=says):
        check_encoder_weights(load_config(None, [*SMP, *overrides]).model)
    code, line = one_line(train_fold_main(work, *SMP, *overrides), capsys)
    assert code == 1 and line.startswith("error: ") and re.search(says, line), line
    assert_nothing_claimed(work)


def test_a_timm_features_dict_still_fits_and_a_folder_is_read(tmp_path):
    import timm

    folder = tmp_path / "snapshot"
    folder.mkdir()
    save_file(timm.create_model("resnet18", features_only=True, pretrained=False).state_dict(), str(folder / "model.safetensors"))
    check_encoder_weights(load_config(None, [*SMP, "model.encoder=tu-resnet18", f"model.encoder_weights={folder}"]).model)


# ---- every training header read before the claim ------------------------------------------
def png_named_jpg(path: Path) -> Path:
    image = np.asarray(Image.open(path).convert("RGB"))
    Image.fromarray(image).save(path, format="PNG")
    return path


BAD_TRAIN_FILES = {
    "photo bomb": (lambda root: jpeg_claiming(root / "train" / "car002_01.jpg", 12000, 12000), "header claims 12000x12000"),
    "mask bomb": (lambda root: gif_claiming(root / "train_masks" / "car003_02_mask.gif", 12000, 12000), "header claims 12000x12000"),
    "mask of another size": (lambda root: gif_claiming(root / "train_masks" / "car001_03_mask.gif", 10, 10), "is 10x10 but its image is 36x24"),
    "png named jpg": (lambda root: png_named_jpg(root / "train" / "car001_02.jpg"), "its content is PNG, not JPEG"),
}


@pytest.mark.parametrize("entry", ["train_fold", "train_cv", "train_cv --parallel"])
@pytest.mark.parametrize("case", list(BAD_TRAIN_FILES))
def test_a_bad_training_file_is_refused_before_the_claim(work, capsys, monkeypatch, entry, case):
    make, says = BAD_TRAIN_FILES[case]
    path = make(work / "tiny")
    main = train_fold_main(work) if entry == "train_fold" else train_cv_main(work, monkeypatch, *entry.split()[1:], *(["2"] if "--parallel" in entry else []))
    before = sorted(p.name for p in (work / "tiny").rglob("*"))
    code, line = one_line(main, capsys)
    assert code == 1 and line.startswith("error: ") and str(path) in line and says in line, line
    assert_nothing_claimed(work)
    assert sorted(p.name for p in (work / "tiny").rglob("*")) == before  # nothing written into the data either


def test_parallel_prepare_claims_no_experiment_of_several_when_one_has_a_bad_photo(work):
    jpeg_claiming(work / "tiny" / "train" / "car000_03.jpg", 12000, 12000)
    specs = [(str(TINY), common(work, f"exp.name={name}")) for name in ("a", "b")]
    with pytest.raises(DataError, match="car000_03.jpg: header claims 12000x12000"):
        check_experiments(specs, None)
    assert_nothing_claimed(work)


# ---- train_masks/ against train_masks.csv -------------------------------------------------
def edit_rows(root: Path, edit) -> Path:
    csv = root / "train_masks.csv"
    edit(pd.read_csv(csv)).to_csv(csv, index=False)
    return csv


MASK_DISAGREEMENTS = {
    "row without a GIF": (lambda root: (root / "train_masks" / "car002_02_mask.gif").unlink(),
                          "train_masks.csv: row car002_02.jpg has no {root}/train_masks/car002_02_mask.gif (1 rows without a GIF in all)"),
    "GIF without a row": (lambda root: edit_rows(root, lambda t: t[t["img"] != "car003_01.jpg"]),
                          "{root}/train_masks/car003_01_mask.gif has no row in {root}/train_masks.csv (1 GIFs without a row in all)"),
    "sampled row differs": (lambda root: edit_rows(root, lambda t: t.assign(rle_mask=np.where(t["img"] == "car000_01.jpg", "1 5", t["rle_mask"]))),
                            "train_masks.csv: row car000_01.jpg differs from {root}/train_masks/car000_01_mask.gif in "),
}


@pytest.mark.parametrize("case", list(MASK_DISAGREEMENTS))
def test_gifs_and_csv_that_disagree_are_refused_naming_the_id(work, capsys, monkeypatch, case):
    make, says = MASK_DISAGREEMENTS[case]
    root = work / "tiny"
    make(root)
    says = says.format(root=root)
    with pytest.raises(DataError, match="train_masks/ and train_masks.csv must hold the same masks") as err:
        CarvanaLayout(root).check_mask_sources()
    assert says in str(err.value) and "\n" not in str(err.value)
    code, line = one_line(train_cv_main(work, monkeypatch), capsys)
    assert code == 1 and says in line, line
    assert_nothing_claimed(work)
    with pytest.raises(DataError, match="train_masks/ and train_masks.csv must hold the same masks"):
        make_folds(CarvanaLayout(root), 2, seed=0)  # its area strata read the CSV


def test_agreeing_sources_pass_and_either_alone_is_not_compared(tiny_layout):
    CarvanaLayout(tiny_layout).check_mask_sources()
    edit_rows(tiny_layout, lambda t: t.assign(rle_mask="1 5"))  # every row wrong, but no GIF folder to compare with
    shutil.rmtree(tiny_layout / "train_masks")
    CarvanaLayout(tiny_layout).check_mask_sources()


def test_real_masks_agree_and_the_check_is_cheap(real_carvana):
    layout = CarvanaLayout(real_carvana)
    started = time.perf_counter()
    layout.check_train(layout.train_ids)  # 768 photos' and masks' headers, the ids both ways, 8 decoded pairs
    assert time.perf_counter() - started < 10  # measured about 0.1 s on the shared 2-core machine


# ---- a PNG named .jpg: both decoding paths refuse it at the header read -------------------
def test_a_png_named_jpg_is_refused_alike_by_both_decode_paths(trained, tmp_path):
    recipe = tune(["plain"], trained / "runs", name="png", out_dir=tmp_path)
    recipe_path = tmp_path / "png.recipe.json"
    recipe.save(recipe_path)
    root = tmp_path / "data"
    shutil.copytree(trained / "data" / "test", root / "test")
    shutil.copy(trained / "data" / "sample_submission.csv", root)
    photo = png_named_jpg(root / "test" / "test02_01.jpg")
    lines = {}
    for decode in ("cpu", "device"):
        out = tmp_path / f"{decode}.csv"
        with pytest.raises(SystemExit) as exit_:
            run(lambda: submit.predict_submission(recipe_path, str(root), out, workers=0, decode=decode))
        lines[decode] = exit_.value.code
        assert not out.exists() and not out.with_name(out.name + ".parts").exists()
    assert lines["cpu"] == lines["device"] == f"error: photo {photo}: its content is PNG, not JPEG: save it as a JPEG (or remove it)"
    with pytest.raises(DataError, match="its content is PNG, not JPEG"):
        check_photos([photo])
