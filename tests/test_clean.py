"""scripts/clean.py removes exactly what it is named: runs/NAME and oof/NAME under the folders
given, never a copy's original, never through a symbolic link, never a fold being trained;
`--dry-run` lists what would go and removes nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tree

from carvana_seg.cleanup import experiment_folders, finished_states, remove
from carvana_seg.config import load_config
from carvana_seg.errors import PipelineError
from carvana_seg.store.paths import ExperimentPaths
from carvana_seg.locks import exclusive_lock

REPO = Path(__file__).resolve().parents[1]


def experiment(work: Path, name: str, relative: bool = False) -> ExperimentPaths:
    """A claimed tiny experiment: fold 0 finished (weights, OOF json, leftover state), fold 1
    resumable. `relative`: trained in `work` with the default relative runs/ and oof/ in its config."""
    base = Path() if relative else work
    with contextlib.chdir(work):
        cfg = load_config(REPO / "configs" / "tiny.yaml", [f"exp.name={name}", f"exp.runs_dir={base / 'runs'}", f"exp.oof_dir={base / 'oof'}"])
        paths = ExperimentPaths.of(cfg)
        paths.claim(cfg)
        for fold in (0, 1):
            paths.state_dir(fold).mkdir(parents=True)
            (paths.state_dir(fold) / "latest.json").write_text("{}")
            (paths.fold_dir(fold) / "model.safetensors").write_bytes(b"w" * 1000)
        paths.oof_dir.mkdir(parents=True)
        paths.oof_json(0).write_text("{}")
    return paths


def clean(work: Path, *args: str) -> subprocess.CompletedProcess:
    folders = ["--runs-dir", str(work / "runs"), "--oof-dir", str(work / "oof")]
    return subprocess.run([sys.executable, "scripts/clean.py", *args, *folders], cwd=REPO, capture_output=True, text=True, timeout=120)


def refused(done: subprocess.CompletedProcess) -> str:
    """The one line of a refusal (exit 1, no traceback)."""
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture()
def work(tmp_path) -> Path:
    experiment(tmp_path, "a")
    experiment(tmp_path, "b")
    return tmp_path


def test_exp_removes_exactly_its_two_folders_and_dry_run_removes_nothing(work):
    (work / "runs" / "a" / "fold1" / ".lock").write_text('{"pid": 1}')  # left by a trainer that died: taken over
    before = tree(work)
    dry = clean(work, "--exp", "a", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [f"would remove {work / 'runs' / 'a'} (0.0 MB)", f"would remove {work / 'oof' / 'a'} (0.0 MB)"]
    assert tree(work) == before
    done = clean(work, "--exp", "a")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "freed 0.0 MB"
    assert tree(work) == {rel: v for rel, v in before.items() if rel.split("/")[:2] not in (["runs", "a"], ["oof", "a"])}


def test_a_name_given_twice_is_removed_once(work):
    before = tree(work)
    dry = clean(work, "--exp", "a", "--exp", "a", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.splitlines() == [f"would remove {work / 'runs' / 'a'} (0.0 MB)", f"would remove {work / 'oof' / 'a'} (0.0 MB)"]
    done = clean(work, "--exp", "a", "--exp", "a")
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert tree(work) == {rel: v for rel, v in before.items() if rel.split("/")[:2] not in (["runs", "a"], ["oof", "a"])}


def test_relative_saved_folders_are_read_from_where_training_ran(tmp_path):
    """Trained in tmp_path with the default relative runs/ and oof/; clean runs from another
    folder with absolute --runs-dir and --oof-dir: not a copy. A copy still is."""
    for name in ("a", "b"):
        experiment(tmp_path, name, relative=True)
    shutil.copytree(tmp_path / "runs" / "a", tmp_path / "runs" / "a_backup", symlinks=True)  # cp -a runs/a runs/a_backup
    before = tree(tmp_path)
    line = refused(clean(tmp_path, "--exp", "a_backup"))
    assert line.startswith(f"error: {tmp_path / 'runs' / 'a_backup' / 'config.yaml'}: its saved config is for {tmp_path / 'runs' / 'a'} and ")
    assert tree(tmp_path) == before

    finished = clean(tmp_path, "--finished-state")
    assert finished.returncode == 0, finished.stderr
    assert [line for line in finished.stdout.splitlines() if line.startswith("keeping")] == [
        f"keeping {tmp_path / 'runs' / 'a_backup'}: its saved config is for {tmp_path / 'runs' / 'a'} and {tmp_path / 'oof' / 'a'}, "
        f"not {tmp_path / 'runs' / 'a_backup'} and {tmp_path / 'oof' / 'a'}"]
    kept = {rel: v for rel, v in before.items() if rel.split("/")[:4] not in (["runs", name, "fold0", "state"] for name in "ab")}
    assert tree(tmp_path) == kept  # the finished folds' state only, the copy's kept

    done = clean(tmp_path, "--exp", "a")
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path) == {rel: v for rel, v in kept.items() if rel.split("/")[:2] not in (["runs", "a"], ["oof", "a"])}


def test_a_copied_run_folder_is_refused_and_its_original_kept(work):
    shutil.copytree(work / "runs" / "a", work / "runs" / "a_backup", symlinks=True)  # cp -a runs/a runs/a_backup
    before = tree(work)
    line = refused(clean(work, "--exp", "a_backup"))
    assert line.startswith(f"error: {work / 'runs' / 'a_backup' / 'config.yaml'}: its saved config is for {work / 'runs' / 'a'} and {work / 'oof' / 'a'}")
    assert "give the matching --runs-dir and --oof-dir" in line
    assert tree(work) == before
    finished = clean(work, "--finished-state", "--dry-run")  # a copy is left alone there too, and said so
    assert finished.returncode == 0, finished.stderr
    assert f"keeping {work / 'runs' / 'a_backup'}: its saved config is for {work / 'runs' / 'a'}" in finished.stdout
    assert f"would remove {work / 'runs' / 'a_backup'}" not in finished.stdout and f"would remove {work / 'runs' / 'a' / 'fold0' / 'state'}" in finished.stdout


def test_an_oof_dir_other_than_the_saved_one_is_refused(work):
    before = tree(work)
    done = subprocess.run([sys.executable, "scripts/clean.py", "--exp", "a", "--runs-dir", str(work / "runs")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert f"not {work / 'runs' / 'a'} and oof/a" in refused(done)
    assert tree(work) == before


@pytest.mark.parametrize("linked", ["runs/a", "oof/a", "runs/a/fold0"])
def test_a_symlinked_experiment_or_fold_folder_is_refused(work, linked):
    outside = work / "outside"
    shutil.move(work / linked, outside)
    (work / linked).symlink_to(outside, target_is_directory=True)
    before = tree(work)
    line = refused(clean(work, "--exp", "a"))
    assert line.startswith(f"error: {work / linked} is a symbolic link: clean never removes through links")
    assert tree(work) == before


@pytest.mark.parametrize("linked", ["runs/a/fold0", "runs/a/fold0/state"])
def test_finished_state_never_deletes_through_a_link(work, linked):
    outside = work / "outside"
    shutil.move(work / linked, outside)
    (work / linked).symlink_to(outside, target_is_directory=True)
    before = tree(work)
    line = refused(clean(work, "--finished-state"))
    assert line == f"error: {work / linked} is a symbolic link: clean never removes through links; remove or replace the link by hand"
    assert tree(work) == before and (outside / ("state" if linked.endswith("fold0") else "") / "latest.json").is_file()


@pytest.mark.parametrize("args", [("--exp", "a"), ("--finished-state",)])
def test_a_fold_being_trained_is_refused(work, args):
    lock = work / "runs" / "a" / "fold0" / ".lock"
    before = tree(work)  # read before the lock is taken: a holder that opens its own lock file drops it (locks.py)
    with exclusive_lock(lock, "fold 0 of 'a'"):
        line = refused(clean(work, *args))
    assert line.startswith(f"error: {lock}: fold0 of experiment 'a' is being trained by PID {os.getpid()} on ")
    assert line.endswith("clean removes nothing while it runs; wait for it to finish or stop it first")
    assert tree(work) == before


def test_clean_removes_one_experiment_and_only_finished_states(tmp_path):
    keep, drop = experiment(tmp_path, "keep"), experiment(tmp_path, "drop")
    assert experiment_folders("drop", tmp_path / "runs", tmp_path / "oof") == [drop.run_dir, drop.oof_dir]
    assert finished_states(tmp_path / "runs") == [drop.state_dir(0), keep.state_dir(0)]
    assert remove(experiment_folders("drop", tmp_path / "runs", tmp_path / "oof")) > 0
    assert not drop.run_dir.exists() and not drop.oof_dir.exists() and keep.config.is_file()
    remove(finished_states(tmp_path / "runs"))
    assert not keep.state_dir(0).exists() and keep.state_dir(1).is_dir()  # an unfinished fold keeps what --resume needs


@pytest.mark.parametrize("name", ["../keep", "/tmp", "..", "a b"])
def test_clean_refuses_names_that_are_not_plain(tmp_path, name):
    keep = experiment(tmp_path, "keep")
    with pytest.raises(PipelineError, match="not a plain name|expected a non-empty name"):
        experiment_folders(name, tmp_path / "runs")
    assert keep.config.is_file()


def test_clean_script_refuses_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "scripts/clean.py", "--exp", "../x"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error: --exp: '../x' is not a plain name") and "Traceback" not in done.stderr
