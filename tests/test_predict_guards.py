"""predict.py: impossible numbers are refused as the flags are parsed, an --out that cannot be
the submission file before anything is predicted, and one submission file has one writer at a
time (a second predict.py naming it is refused in one line naming the holder). The file's name
decides its content (gzip when it ends in .gz), and the validator checks they agree."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tree

from carvana_seg.commands.cli import run
from carvana_seg.commands.predict import main as predict_main
from carvana_seg.config import load_config, save_config
from carvana_seg.inference import submit
from carvana_seg.recipe.tune import tune
from carvana_seg.locks import exclusive_lock
from carvana_seg.recipe.recipe import Member, Recipe

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/predict.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def recipe_of_an_untrained_experiment(tmp_path) -> Path:
    """A recipe that loads (its experiment's config exists) but whose weights were never trained."""
    save_config(load_config(REPO / "configs" / "tiny.yaml", ["exp.name=e", f"data.root={tmp_path}"]), tmp_path / "runs" / "e" / "config.yaml")
    path = tmp_path / "r.recipe.json"
    Recipe("r", (Member("e", str(tmp_path / "runs"), 1.0, 2),), str(tmp_path)).save(path)
    return path


@pytest.mark.parametrize(
    "flag, value, problem",
    [
        ("--chunk-images", "0", "argument --chunk-images: '0' is not a positive integer (1 or more)"),
        ("--chunk-images", "-3", "argument --chunk-images: '-3' is not a positive integer (1 or more)"),
        ("--workers", "-1", "argument --workers: '-1' is not a non-negative integer (0 or more)"),
        ("--batch-size", "0", "argument --batch-size: '0' is not a positive integer (1 or more)"),
        ("--batch-size", "two", "argument --batch-size: 'two' is not a positive integer (1 or more)"),
    ],
)
def test_impossible_numbers_are_refused_when_parsed(tmp_path, recipe_of_an_untrained_experiment, flag, value, problem):
    before = files_under(tmp_path)
    done = predict("--recipe", str(recipe_of_an_untrained_experiment), flag, value)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"config error: {problem} (see --help)"]
    assert files_under(tmp_path) == before


def test_a_second_writer_of_the_same_file_is_refused_naming_the_holder(tmp_path, recipe_of_an_untrained_experiment):
    """The test process holds the submission's lock, as a running predict.py would, beside a
    chunk that run has written: the second run is refused and touches neither."""
    out = tmp_path / "sub.csv"
    parts = tmp_path / "sub.csv.parts"
    parts.mkdir()
    (parts / "stamp.json").write_text("{}")
    (parts / "chunk-000000.csv").write_text("test01_01.jpg,1 1\n")
    before = files_under(tmp_path)  # read before the lock is taken: a holder that opens its own lock file drops it (locks.py)
    with exclusive_lock(tmp_path / "sub.csv.lock", f"submission {out}"):
        done = predict("--recipe", str(recipe_of_an_untrained_experiment), "--out", str(out), "--workers", "0")
    assert files_under(tmp_path) == before
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'sub.csv.lock'}: submission {out} is being written by PID {os.getpid()} on "), done.stderr
    assert not out.exists()


HELD_RUN = """
import pathlib, sys, time
from carvana_seg.commands.predict import cli
from carvana_seg.inference import submit
written, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
original = submit.write_part
def write_then_wait(*args, **kwargs):
    original(*args, **kwargs)
    written.touch()
    while not release.exists():
        time.sleep(0.05)
submit.write_part = write_then_wait
sys.argv = ["scripts/predict.py", *sys.argv[3:]]
cli()
"""


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_two_predictions_of_one_file_never_mix_and_a_killed_holder_is_taken_over(trained, tmp_path):
    """Run A is held after its first chunk; run B, another recipe to the same file, is refused
    naming A and changes nothing; A is killed (-9) holding the lock; run C, A's command, takes
    the lock over, resumes A's chunks and writes the same file as an uninterrupted run."""
    subs = trained / "submissions"
    tune(["plain"], trained / "runs", name="guard_a", out_dir=subs)
    tune(["se"], trained / "runs", name="guard_b", out_dir=subs)
    reference = submit.predict_submission(subs / "guard_a.recipe.json", out=tmp_path / "reference.csv", chunk_images=1, workers=0).read_bytes()
    out, written, release = tmp_path / "shared.csv", tmp_path / "written", tmp_path / "release"
    args = ["--out", str(out), "--chunk-images", "1", "--workers", "0"]
    held = subprocess.Popen(
        [sys.executable, "-c", HELD_RUN, str(written), str(release), "--recipe", str(subs / "guard_a.recipe.json"), *args],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(written, held)
        parts = files_under(tmp_path / "shared.csv.parts")
        refused = predict("--recipe", str(subs / "guard_b.recipe.json"), *args)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {out}.lock: submission {out} is being written by PID {held.pid} on "), refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert files_under(tmp_path / "shared.csv.parts") == parts and not out.exists()
        os.kill(held.pid, signal.SIGKILL)
        held.wait(timeout=60)
    finally:
        if held.poll() is None:
            held.kill()
            held.wait()
    assert Path(f"{out}.lock").exists() and json.loads(Path(f"{out}.lock").read_text())["pid"] == held.pid  # left by the dead run
    resumed = predict("--recipe", str(subs / "guard_a.recipe.json"), *args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 of 4 chunks already written" in resumed.stdout
    assert out.read_bytes() == reference
    assert not Path(f"{out}.lock").exists() and not (tmp_path / "shared.csv.parts").exists()


OUT_REFUSALS = {
    "an existing folder": (lambda t: (t / "DIR").mkdir() or ("--out", str(t / "DIR")),
                           "--out '{t}/DIR' is a folder: --out names the submission file, e.g. {t}/DIR/NAME.csv"),
    "under a file": (lambda t: (t / "afile.txt").write_text("mine") and ("--out", str(t / "afile.txt" / "x.csv")),
                     "--out '{t}/afile.txt/x.csv': {t}/afile.txt is not a folder, so no file can be written under it; choose another --out"),
    "--gzip, a name without .gz": (lambda t: ("--out", str(t / "g.csv"), "--gzip"),
                                   "--gzip with --out '{t}/g.csv': the name decides the content, so a gzip submission's ends in .gz: "
                                   "give --out {t}/g.csv.gz (a .gz name alone compresses too)"),
}


@pytest.mark.parametrize("case", list(OUT_REFUSALS))
def test_an_out_that_cannot_be_the_submission_is_refused_before_predicting(tmp_path, recipe_of_an_untrained_experiment, monkeypatch, capsys, case):
    """One line before any photo is predicted (the recipe's weights were never trained: reaching
    them would be another error), and nothing written: no `.parts` folder, no lock."""
    make, message = OUT_REFUSALS[case]
    args = make(tmp_path)
    before = tree(tmp_path)
    monkeypatch.setattr(sys, "argv", ["predict.py", "--recipe", str(recipe_of_an_untrained_experiment), "--workers", "0", *args])
    with pytest.raises(SystemExit) as stop:
        run(predict_main)
    assert stop.value.code == f"error: {message.format(t=tmp_path)}"
    assert "Traceback" not in capsys.readouterr().err and tree(tmp_path) == before


def test_the_name_decides_gzip_and_equal_chunks_give_equal_bytes(tmp_path):
    parts = [tmp_path / "chunk-0.csv", tmp_path / "chunk-1.csv"]
    parts[0].write_text("a.jpg,1 2\n")
    parts[1].write_text("b.jpg,\n")
    text = b"img,rle_mask\na.jpg,1 2\nb.jpg,\n"
    submit.join_parts(tmp_path / ".g.csv.gz.x1.tmp", parts, "g.csv.gz")
    time.sleep(1.1)  # a gzip header with the time in seconds would differ now
    submit.join_parts(tmp_path / ".g.csv.gz.x2.tmp", parts, "g.csv.gz")
    first = (tmp_path / ".g.csv.gz.x1.tmp").read_bytes()
    assert first == (tmp_path / ".g.csv.gz.x2.tmp").read_bytes() and gzip.decompress(first) == text
    assert first[3] == 0x08 and first[4:8] == b"\0\0\0\0" and first[10:16] == b"g.csv\0"  # its name (less .gz), no temp name, time 0
    submit.join_parts(tmp_path / ".plain.tmp", parts, "g2.csv")
    assert (tmp_path / ".plain.tmp").read_bytes() == text


@pytest.mark.parametrize("name, gzipped, problem", [
    ("g.csv", True, "{path}: gzip-compressed but not named .gz: rename it to g.csv.gz"),
    ("g2.csv.gz", False, "{path}: named .gz but not gzip-compressed: rename it without .gz, or compress it"),
])
def test_the_validator_refuses_a_file_whose_content_and_name_disagree(tmp_path, name, gzipped, problem):
    content = b"img,rle_mask\ntest01_01.jpg,1 2\n"
    (tmp_path / "sample.csv").write_bytes(content)
    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if gzipped else content)
    done = subprocess.run([sys.executable, "scripts/check_submission.py", str(path), "--sample", str(tmp_path / "sample.csv"), "--image-size", "4x4"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.splitlines() == [problem.format(path=path)], done.stderr
