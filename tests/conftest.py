"""Shared fixtures: the real Carvana subset (skipped when absent) and tiny synthetic layouts."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from carvana_seg.data.layout import write_mask_gif

REAL_CARVANA = Path(__file__).resolve().parents[2] / "shared" / "carvana"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def real_carvana() -> Path:
    if not (REAL_CARVANA / "train_masks.csv").is_file():
        pytest.skip(f"real Carvana subset not found at {REAL_CARVANA} (optional: the project runs without it)")
    return REAL_CARVANA


def write_tiny_layout(root: Path, cars: int = 4, angles: int = 3, hw: tuple[int, int] = (24, 36)) -> Path:
    """A minimal Carvana-layout folder: ellipse 'cars' of varying size, GIF masks, RLE csv."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from carvana_seg.data.layout import write_mask_gif
    from carvana_seg.ops.rle import rle_encode

    (root / "train").mkdir(parents=True)
    (root / "train_masks").mkdir()
    (root / "test").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    rows = []
    for c in range(cars):
        for a in range(1, angles + 1):
            image_id = f"car{c:03d}_{a:02d}"
            radius = 0.2 + 0.05 * ((c + a) % 4)
            mask = (((yy / hw[0] - 0.5) / radius) ** 2 + ((xx / hw[1] - 0.5) / (radius * 1.4)) ** 2 < 1).astype(np.uint8)
            image = np.where(mask[..., None], 60, 220).astype(np.uint8) + rng.integers(0, 20, (*hw, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "train" / f"{image_id}.jpg", quality=95)
            write_mask_gif(mask, root / "train_masks" / f"{image_id}_mask.gif")
            rows.append((f"{image_id}.jpg", rle_encode(mask)))
            if c == 0:
                Image.fromarray(image).save(root / "test" / f"test{a:02d}_01.jpg", quality=95)
    pd.DataFrame(rows, columns=["img", "rle_mask"]).to_csv(root / "train_masks.csv", index=False)
    test_rows = [(f"test{a:02d}_01.jpg", "1 1") for a in range(1, angles + 1)]
    pd.DataFrame(test_rows, columns=["img", "rle_mask"]).to_csv(root / "sample_submission.csv", index=False)
    return root


@pytest.fixture()
def tiny_layout(tmp_path) -> Path:
    return write_tiny_layout(tmp_path / "tiny")


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """Two tiny experiments (plain and SE U-Nets), both folds trained; returns the work dir."""
    from carvana_seg.config import load_config
    from carvana_seg.data.folds import make_folds, write_folds
    from carvana_seg.data.layout import CarvanaLayout
    from carvana_seg.training.cv import train_experiments

    work = tmp_path_factory.mktemp("chain")
    root = write_tiny_layout(work / "data", cars=4, angles=4, hw=(48, 72))
    write_folds(make_folds(CarvanaLayout(root), 2, seed=0), root / "folds.csv")
    common = [f"data.root={root}", f"data.cache_dir={work / 'cache'}", f"exp.runs_dir={work / 'runs'}", f"exp.oof_dir={work / 'oof'}"]
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    train_experiments([load_config(tiny, [*common, "exp.name=plain"]), load_config(tiny, [*common, "exp.name=se", "model.block=se"])])
    return work


def tree(root: Path) -> dict[str, object]:
    """Every entry under `root`, links not followed: a file's bytes, a link's target, or "dir";
    what a refused command must leave exactly as it was."""
    import os

    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            found[path.relative_to(root).as_posix()] = os.readlink(path) if path.is_symlink() else "dir" if path.is_dir() else path.read_bytes()
    return found


# Image files whose headers claim a size their bodies do not have (decompression-bomb cases).
def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny JPEG whose SOF0 header claims width x height."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def gif_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny palette GIF whose logical screen claims width x height."""
    write_mask_gif(np.zeros((4, 4), np.uint8), path)
    data = bytearray(path.read_bytes())
    data[6:10] = struct.pack("<HH", width, height)
    path.write_bytes(bytes(data))
    return path


# One-line errors. A command's check runs its script's `main` in-process (through
# `carvana_seg.commands.cli.run`) where that shows the behaviour; a real process only where
# nothing else does (a kill -9, a script's own exit path).
REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run scripts/<script> in-process as `python scripts/<script> args`; (exit status, stderr)."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", [script, *args])
    try:
        runpy.run_path(str(REPO / "scripts" / script), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        if isinstance(exit_.code, str):  # sys.exit("error: ...") prints the text and exits 1
            print(exit_.code, file=sys.stderr)
            code = 1
        else:
            code = exit_.code or 0
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, status: int, *needles: str) -> None:
    """Exit `status` with exactly one `error:`/`config error:` line containing every needle, no traceback."""
    lines = [line for line in err.splitlines() if line.startswith(("error:", "config error:"))]
    assert code == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def one_line_error_of(fn) -> str:
    """What `cli.run(fn)` prints: asserts a one-line `error:` exit (status 1)."""
    from carvana_seg.commands.cli import run

    with pytest.raises(SystemExit) as exit_:
        run(fn)
    message = exit_.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    return message
