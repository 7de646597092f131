"""Each bad input is refused with one line naming the file or key (no traceback),
and an interrupted step leaves a state the next run recovers from.

Script-level checks run the script's `main` in-process through `carvana_seg.commands.cli.run` (exit
status and the one printed line), except where only a real process shows the behaviour
(a kill -9, the first script run that crashed before).
"""

from __future__ import annotations

import fcntl
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from conftest import gif_claiming, jpeg_claiming
from carvana_seg import config as config_module
from carvana_seg.commands.cli import parse_config_args, run
from carvana_seg.config import CHOICES, ConfigError, load_config, read_saved_config, save_config
from carvana_seg.data import synthetic
from carvana_seg.data.dataset import SegmentationDataset
from carvana_seg.data.folds import incomplete_cars, make_folds
from carvana_seg.data.layout import (
    MAX_PIXELS_ENV,
    CarvanaLayout,
    DataError,
    check_photos,
    image_size,
    read_image,
    read_mask_file,
    write_mask_gif,
)
from carvana_seg.data.sources import BUILD_LOCK, DecodedSource, build_cache, remove_abandoned_builds
from carvana_seg.data.workers import worker_errors
from carvana_seg.names import PlainNameError, check_plain_name
from carvana_seg.ops.rle import RLEError, rle_runs

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run scripts/<script> in-process as `python scripts/<script> args`; (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    try:
        runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        if isinstance(exit_.code, str):  # sys.exit("error: ...") prints the text and exits 1
            print(exit_.code, file=sys.stderr)
            code = 1
        else:
            code = exit_.code or 0
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, status: int, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith(("error:", "config error:"))]
    assert code == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def one_line_error_of(fn) -> str:
    """What `cli.run(fn)` prints: asserts a one-line `error:` exit (status 1)."""
    with pytest.raises(SystemExit) as exit_:
        run(fn)
    message = exit_.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    return message


# ---- 2: experiment names --------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../tmp/escape", "/tmp/abs", "a/b", ".", "..", "has space", "tab\there", "é"])
def test_experiment_name_must_be_plain(name):
    with pytest.raises(ConfigError, match=r"exp\.name: .* is not a plain name"):
        load_config(None, [f"exp.name={name}"])


def test_plain_names_pass_and_the_check_is_reusable():
    for name in ("unet_res-192.v2", "A1", "..a", "a..b"):
        assert check_plain_name(name, "recipe name") == name
    with pytest.raises(PlainNameError, match=r"--out: '\.\./x' is not a plain name"):
        check_plain_name("../x", "--out")
    with pytest.raises(PlainNameError, match="--out: expected a non-empty name"):
        check_plain_name("", "--out")


def test_name_from_preset_and_file_stem_are_checked(tmp_path):
    preset = tmp_path / "ok.yaml"
    preset.write_text("exp:\n  name: ../outside\n")
    with pytest.raises(ConfigError, match=r"ok\.yaml: exp\.name: '\.\./outside'"):
        load_config(preset)
    spaced = tmp_path / "my exp.yaml"
    spaced.write_text("train:\n  epochs: 1\n")
    with pytest.raises(ConfigError, match=r"my exp\.yaml: an experiment is named after its config file"):
        load_config(spaced)
    assert load_config(spaced, ["exp.name=my_exp"]).exp.name == "my_exp"


def test_script_refuses_an_escaping_name_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_config_args(None, argv=["exp.name=../../tmp/escape"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("config error: exp.name:"), err


# ---- 3: decompression bombs -----------------------------------------------------------
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest resets the filter layout.py sets
@pytest.mark.parametrize("side", [30000, 12000])  # beyond PIL's own error; beyond our limit only
def test_oversized_headers_are_refused_before_decoding(tmp_path, side):
    photo = jpeg_claiming(tmp_path / f"bomb{side}.jpg", side, side)
    assert photo.stat().st_size < 4096
    for read in (image_size, read_image):
        with pytest.raises(DataError, match=f"image {photo}: .*decompression bomb"):
            read(photo)
    message = one_line_error_of(lambda: read_image(photo))
    assert str(photo) in message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest resets the filter layout.py sets
def test_oversized_mask_header_is_refused(tmp_path):
    mask = gif_claiming(tmp_path / "m_mask.gif", 10000, 10000)
    with pytest.raises(DataError, match=f"mask {mask}: header claims 10000x10000"):
        read_mask_file(mask)


def test_pils_own_bomb_warning_does_not_surface(tmp_path):
    photo = jpeg_claiming(tmp_path / "big.jpg", 12000, 12000)  # over PIL's warning limit, under its error
    code = "import sys; from carvana_seg.commands.cli import run; from carvana_seg.data.layout import image_size; run(lambda: image_size(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", code, str(photo)], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith(f"error: image {photo}: header claims 12000x12000")
    assert result.stderr.count("\n") == 1 and "Warning" not in result.stderr, result.stderr


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    photo = jpeg_claiming(tmp_path / "big.jpg", 9000, 8000)  # 72 MP: over the 64 MP default
    with pytest.raises(DataError, match=MAX_PIXELS_ENV):
        image_size(photo)
    monkeypatch.setenv(MAX_PIXELS_ENV, "100000000")
    assert image_size(photo) == (8000, 9000)  # the header only: nothing is decoded
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(DataError, match=f"{MAX_PIXELS_ENV}='lots'"):
        image_size(photo)


def test_a_training_bomb_stops_the_cache_build_with_the_file_named(tiny_layout, tmp_path):
    bomb = jpeg_claiming(tiny_layout / "train" / "car002_01.jpg", 30000, 30000)
    layout = CarvanaLayout(tiny_layout)
    message = one_line_error_of(lambda: build_cache(layout, layout.train_ids, (16, 24), tmp_path / "cache"))
    assert str(bomb) in message
    assert not list(tmp_path.glob("cache/*")) and not list(tmp_path.glob("cache/.*"))  # nothing half built


# ---- 4 (data part): photos checked up front, worker errors as one line ------------------
def test_missing_photo_is_found_up_front(tiny_layout):
    layout = CarvanaLayout(tiny_layout)
    ids = layout.train_ids
    (tiny_layout / "train" / "car003_03.jpg").unlink()
    with pytest.raises(DataError, match="photo .*car003_03.jpg is missing"):
        check_photos([layout.image_path(i) for i in ids])
    with pytest.raises(DataError, match="car003_03.jpg"):
        DecodedSource(layout, ids, (16, 24))


def test_undecodable_photo_in_a_loader_worker_is_one_line(tiny_layout):
    layout = CarvanaLayout(tiny_layout)
    source = DecodedSource(layout, layout.train_ids, (16, 24))  # the cache is off
    photo = tiny_layout / "train" / "car001_02.jpg"
    photo.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])  # truncated: the header still reads
    # One batch of every photo: the error is the worker's only result.
    loader = DataLoader(SegmentationDataset(source, range(len(source)), train=False), batch_size=len(source), num_workers=1)

    def unwrapped_epoch() -> None:
        iterator = iter(loader)
        try:
            for _ in iterator:
                pass
        finally:  # now, not when the traceback is collected (the worker's join then waits 5 s)
            iterator._shutdown_workers()

    def epoch() -> None:
        with worker_errors():
            unwrapped_epoch()

    with pytest.raises(DataError) as caught:
        epoch()
    assert str(caught.value).startswith(f"cannot read image {photo}") and "\n" not in str(caught.value)
    # cli.run alone also prints the worker's line, not its traceback
    assert one_line_error_of(unwrapped_epoch).startswith(f"error: cannot read image {photo}")


# ---- 6: config values -----------------------------------------------------------------
def test_text_fields_take_the_word_as_typed(tmp_path):
    cfg = load_config(None, ["train.precision=no", "train.trackers=off", "exp.name=yes", "data.use_cache=no", "train.compile=yes"])
    assert (cfg.train.precision, cfg.train.trackers, cfg.exp.name) == ("no", "off", "yes")
    assert cfg.data.use_cache is False and cfg.train.compile is True  # booleans still read yes/no
    preset = tmp_path / "words.yaml"
    preset.write_text("exp:\n  name: on\ntrain:\n  precision: no\n  trackers: yes\ndata:\n  augment: off\n  size: 32x48\n")
    cfg = load_config(preset)
    assert (cfg.exp.name, cfg.train.precision, cfg.train.trackers, cfg.data.augment) == ("on", "no", "yes", False)
    save_config(cfg, tmp_path / "saved.yaml")
    assert read_saved_config(tmp_path / "saved.yaml") == cfg


def test_numbers_and_nulls_still_convert():
    cfg = load_config(None, ["train.lr=3e-4", "train.epochs=+3", "model.encoder_weights=null", "model.dropout=0.1"])
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 3 and cfg.model.encoder_weights is None
    assert load_config(None, ["model.encoder_weights=imagenet"]).model.encoder_weights == "imagenet"
    for bad in ("train.epochs=3.0", "data.use_cache=1", "model.dropout=yes"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config(None, [bad])


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_choice_fields_are_checked_on_load_and_list_the_choices(key):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"{key}=nonsense"])
    message = str(caught.value)
    assert message.startswith(f"{key}: 'nonsense' is not one of")
    assert all(choice in message for choice in CHOICES[key])


@pytest.mark.parametrize(
    "override",
    ["train.epochs=0", "train.batch_size=0", "train.lr=-0.1", "train.lr=nan", "train.lr=inf",
     "data.folds=1", "data.num_workers=-1", "train.grad_accum=0", "train.ema=1", "model.dropout=1",
     "train.val_every=0", "model.depth=0", "model.base_channels=0", "data.darken_floor=1.5", "train.weight_decay=-1",
     "train.seed=-1", "data.fold_seed=4294967296"],
)
def test_impossible_numbers_are_config_errors(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"^{key.replace('.', r'[.]')}: must be"):
        load_config(None, [override])


def test_bad_choice_in_a_preset_names_the_file_and_scripts_exit_2(tmp_path, capsys):
    preset = tmp_path / "bad_loss.yaml"
    preset.write_text("train:\n  loss: dice\n")
    with pytest.raises(ConfigError, match=r"bad_loss\.yaml: train\.loss: 'dice' is not one of"):
        load_config(preset)
    with pytest.raises(SystemExit) as exit_:
        parse_config_args(None, argv=["train.batch_size=0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err == "config error: train.batch_size: must be >= 1, got 0\n"


def test_choice_lists_are_the_ones_the_code_uses():
    from accelerate.utils import PrecisionType

    from carvana_seg.models import available_models
    from carvana_seg.models.blocks import BLOCK_KINDS
    from carvana_seg.models.unet import UPSAMPLE_MODES
    from carvana_seg.training import trainer
    from carvana_seg.training.losses import LOSSES

    assert tuple(LOSSES) == config_module.LOSS_CHOICES
    assert tuple(BLOCK_KINDS) == config_module.BLOCK_CHOICES
    assert sorted(available_models()) == sorted(config_module.MODEL_CHOICES)
    assert UPSAMPLE_MODES is config_module.UPSAMPLE_CHOICES and trainer.KEEP_CHOICES is config_module.KEEP_CHOICES
    assert set(config_module.PRECISION_CHOICES) <= {p.value for p in PrecisionType}
    for schedule in config_module.SCHEDULE_CHOICES:
        assert trainer.lr_factor(5, 10, 2, schedule) > 0


# ---- 8: one RLE parser for train_masks.csv and submissions ------------------------------
@pytest.mark.parametrize(
    "rle, why",
    [("1 2 x 4", "not an integer"), ("1 2 3", "odd number"), ("862 5", "beyond"), ("99999999999999999999 1", "not an integer")],
)
def test_bad_train_masks_row_names_file_and_row(tiny_layout, rle, why):
    table = pd.read_csv(tiny_layout / "train_masks.csv")
    table.loc[table["img"] == "car002_02.jpg", "rle_mask"] = rle  # 24x36 = 864 pixels
    table.to_csv(tiny_layout / "train_masks.csv", index=False)
    csv = tiny_layout / "train_masks.csv"
    with pytest.raises(DataError, match=f"{csv}: row car002_02.jpg .*{why}"):
        make_folds(CarvanaLayout(tiny_layout), 2, seed=0)
    for gif in (tiny_layout / "train_masks").iterdir():
        gif.unlink()
    with pytest.raises(DataError, match=f"{csv}: row car002_02.jpg .*{why}"):
        CarvanaLayout(tiny_layout).read_mask("car002_02")


def test_make_folds_script_reports_a_non_integer_token_in_one_line(tiny_layout):
    table = pd.read_csv(tiny_layout / "train_masks.csv")
    table.loc[0, "rle_mask"] = "12 3 abc 4"
    table.to_csv(tiny_layout / "train_masks.csv", index=False)
    result = subprocess.run([sys.executable, "scripts/make_folds.py", f"data.root={tiny_layout}", "data.folds=2"],
                            capture_output=True, text=True, cwd=ROOT)
    assert_one_line_error(result.returncode, result.stderr, 1, "train_masks.csv: row car000_01.jpg", "'abc'")
    assert not (tiny_layout / "folds.csv").exists()


def test_duplicate_train_masks_rows_are_an_error(tiny_layout):
    table = pd.read_csv(tiny_layout / "train_masks.csv")
    pd.concat([table, table.iloc[[3]]]).to_csv(tiny_layout / "train_masks.csv", index=False)
    with pytest.raises(DataError, match="train_masks.csv: 1 images have more than one row, e.g. car001_01"):
        CarvanaLayout(tiny_layout).rle_masks


def test_rle_parser_rejects_overflowing_numbers():
    with pytest.raises(RLEError, match="not an integer"):
        rle_runs("1 99999999999999999999999", 10)


# ---- 9: synthetic data published only when complete; incomplete cars warned about -------
def test_failed_generation_leaves_no_folder(tmp_path, monkeypatch):
    calls = []
    real_write_car = synthetic.writer._write_car

    def fail_on_second_car(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real_write_car(*args, **kwargs)

    monkeypatch.setattr(synthetic.writer, "_write_car", fail_on_second_car)
    with pytest.raises(RuntimeError):
        synthetic.generate(tmp_path / "out", cars=2, test_cars=0, size=(48, 32))
    assert list(tmp_path.iterdir()) == []


def test_killed_generator_leaves_only_a_hidden_partial_folder(tmp_path):
    out = tmp_path / "synthetic"
    proc = subprocess.Popen([sys.executable, "scripts/make_synthetic.py", "--out", str(out), "--cars", "300",
                             "--test-cars", "0", "--size", "48x32"], cwd=ROOT, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".synthetic.*.partial/train/*.jpg")) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [p.name.endswith(".partial") and p.name.startswith(".") for p in tmp_path.iterdir()] == [True]
    assert not out.exists()
    with pytest.raises(DataError, match="does not exist"):
        CarvanaLayout(out)


def test_make_folds_warns_about_cars_with_missing_photos(tiny_layout, monkeypatch, capsys):
    assert incomplete_cars(["a_01", "a_02", "b_01"]) == {"a": 2, "b": 1}
    assert incomplete_cars([f"c_{i:02d}" for i in range(1, 17)]) == {}
    code, err = run_script("make_folds.py", [f"data.root={tiny_layout}", "data.folds=2"], monkeypatch, capsys)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 4 and "warning: car car000 has 3 of 16 photos" in warnings[0], err


# ---- 10: temporary folders of killed cache builds are removed ----------------------------
def test_abandoned_cache_builds_are_removed_but_running_ones_kept(tiny_layout, tmp_path):
    cache = tmp_path / "cache"
    name = "tiny-train-16x24-0123456789abcdef"
    killed = cache / f".{name}.k1ll3d_x"  # its builder is gone: the lock file is free
    running = cache / f".{name}.running"  # a build in progress holds its lock
    fresh = cache / f".{name}.justmade"  # created a moment ago, lock file not yet written
    old = cache / f".{name}.oldversn"  # left by a build without a lock file, hours ago
    unrelated = cache / ".keepme"
    for folder in (killed, running, fresh, old, unrelated):
        folder.mkdir(parents=True)
        (folder / "images.u8").write_bytes(b"\0" * 64)
    (killed / BUILD_LOCK).touch()
    (running / BUILD_LOCK).touch()
    hours_ago = time.time() - 3 * 3600
    os.utime(old, (hours_ago, hours_ago))
    os.utime(unrelated, (hours_ago, hours_ago))
    with open(running / BUILD_LOCK) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert remove_abandoned_builds(cache) == [killed, old]
        layout = CarvanaLayout(tiny_layout)
        built = build_cache(layout, layout.train_ids, (16, 24), cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted([fresh.name, running.name, unrelated.name, Path(built.images.filename).parent.name])
    assert not (Path(built.images.filename).parent / BUILD_LOCK).exists()


# ---- 12: upper-case .JPG photos -------------------------------------------------------
def test_upper_case_jpg_photos_are_used_in_train_and_test(tiny_layout, tmp_path):
    (tiny_layout / "train" / "car001_02.jpg").rename(tiny_layout / "train" / "car001_02.JPG")
    (tiny_layout / "test" / "test02_01.jpg").rename(tiny_layout / "test" / "test02_01.Jpg")
    layout = CarvanaLayout(tiny_layout)
    assert len(layout.train_ids) == 12 and "car001_02" in layout.train_ids
    assert layout.image_path("car001_02").name == "car001_02.JPG"
    assert layout.image_path("test02_01", "test").name == "test02_01.Jpg"
    assert read_image(layout.image_path("test02_01", "test")).shape == (24, 36, 3)
    cached = build_cache(layout, layout.train_ids, (16, 24), tmp_path / "cache")
    index = layout.train_ids.index("car001_02")
    assert np.array_equal(cached.get(index)[0], DecodedSource(layout, layout.train_ids, (16, 24)).get(index)[0])
    assert layout.image_path("nope_01", "test") == tiny_layout / "test" / "nope_01.jpg"  # named in the reader's error


def test_two_photos_of_one_id_are_an_error(tiny_layout):
    (tiny_layout / "train" / "car001_02.JPG").write_bytes((tiny_layout / "train" / "car001_02.jpg").read_bytes())
    with pytest.raises(DataError, match=r"car001_02\.(jpg|JPG) and .*car001_02\.(jpg|JPG) are two photos of one id"):
        CarvanaLayout(tiny_layout).train_ids

