"""Console entry points (pyproject [project.scripts]): each names a command module's `cli`,
and scripts/<name>.py runs that same module's `main`."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
SCRIPT_OF = {"train": "train_cv", "tune": "tune", "predict": "predict", "export": "export", "leaderboard": "leaderboard"}


def test_every_entry_point_is_a_command_the_matching_script_runs():
    assert sorted(ENTRY_POINTS) == sorted(f"carvana-{name}" for name in SCRIPT_OF)
    for command, target in ENTRY_POINTS.items():
        module_name, _, function = target.partition(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function)) and callable(module.main), target
        script = (REPO / "scripts" / f"{SCRIPT_OF[command.removeprefix('carvana-')]}.py").read_text()
        assert f"from {module_name} import main" in script, command


def test_an_installed_command_prints_a_user_error_as_one_line(tmp_path):
    command = Path(sys.executable).parent / "carvana-export"
    if not command.is_file():
        pytest.skip("console commands not installed: run `make install` (pip install --no-build-isolation --no-deps -e .)")
    done = subprocess.run(
        [str(command), "--recipe", str(tmp_path / "none.recipe.json"), "--out", str(tmp_path / "b")],
        cwd=tmp_path, env={**os.environ}, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 1 and done.stderr.strip() == f"error: recipe {tmp_path / 'none.recipe.json'} not found: write one with scripts/tune.py"
