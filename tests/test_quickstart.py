"""The README's quick start, run as typed on a tiny dataset (every other command shown in the
docs and in `--help` is checked against the code by tests/test_docs.py and test_commands.py).

The quick start's commands are read from README.md, not copied here, so the README cannot
drift from what works. Tiny sizes are appended to each command (argparse and the key=value
overrides both keep the last value given), so the test runs the same commands in seconds.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETUP = ["make install", "source .venv/bin/activate"]  # what the test's own interpreter stands for
TINY_DATA = ["--cars", "4", "--test-cars", "1", "--size", "192x128"]
TINY_TRAINING = ["data.size=32x48", "data.folds=2", "train.epochs=1", "model.base_channels=4", "train.batch_size=8"]


def quick_start_commands(readme: str) -> list[str]:
    """The commands of the first ```bash block under '## Quick start' (comments dropped, `\\` lines joined)."""
    section = readme.split("## Quick start", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def tiny(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "python", f"quick start command does not start with python: {command}"
    extra = TINY_DATA if words[1] == "scripts/make_synthetic.py" else TINY_TRAINING if "--config" in words else []
    return [sys.executable, *words[1:], *extra]


@pytest.mark.slow
def test_readme_quick_start_runs_as_typed(tmp_path):
    commands = quick_start_commands((REPO / "README.md").read_text())
    assert commands[: len(SETUP)] == SETUP
    for name in ("scripts", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    for command in commands[len(SETUP) :]:
        done = subprocess.run(tiny(command), cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "submissions" / "my_first.csv").is_file() and (tmp_path / "leaderboard.md").is_file()
    assert (tmp_path / "runs" / "my_unet" / "config.yaml").is_file()


@pytest.mark.slow
def test_a_refused_launch_shows_only_its_one_line_error():
    """The README's launch flags: no "values were not passed" block, and with -q no CalledProcessError traceback."""
    accelerate = Path(sys.executable).parent / "accelerate"
    flags = ["-q", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    done = subprocess.run([str(accelerate), "launch", *flags, "scripts/train_fold.py", "--config", "configs/tiny.yaml", "--fold", "9"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["error: --fold 9: must be in 0..1 (data.folds=2)"], done.stderr
