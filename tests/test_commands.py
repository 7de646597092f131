"""Console entry points (pyproject [project.scripts]): each names a command module's `cli`,
and scripts/<name>.py runs that same module's `main`. Every command's `--help` (its module
docstring) has a one-line description, two or three examples that the docs checker accepts,
and a `Manual:` line naming the page that covers it."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
SCRIPT_OF = {"train": "train_cv", "tune": "tune", "predict": "predict", "export": "export", "leaderboard": "leaderboard"}
COMMANDS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "scripts").glob("*.py")) + sorted(ENTRY_POINTS)
EXAMPLE = re.compile(r"^    ((?:python|accelerate|torchrun|carvana-)\S* .*)$", re.M)  # an indented command line
MANUAL = re.compile(r"^Manual: (.+)$", re.M)
PAGE = re.compile(r"(?:docs/)?[\w.-]+\.md")


def help_module(command: str) -> Path:
    """The file whose docstring a command's --help shows: the module its `main` comes from."""
    if command in ENTRY_POINTS:
        module = ENTRY_POINTS[command].partition(":")[0]
    else:
        tree = ast.parse((REPO / command).read_text())
        imports = [node for node in tree.body if isinstance(node, ast.ImportFrom) and any(alias.name == "main" for alias in node.names)]
        if not imports:
            return REPO / command
        module = imports[0].module
    return REPO / "src" / f"{module.replace('.', '/')}.py"


def help_doc(command: str) -> str:
    source = help_module(command).read_text()
    assert re.search(r"(description=|(parse_config_args|command_parser)\(\s*)__doc__", source), f"{help_module(command)}: its parser does not show the docstring"
    return ast.get_docstring(ast.parse(source))


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_a_one_line_description_examples_and_its_manual_page(command):
    doc = help_doc(command)
    first = doc.partition("\n\n")[0]
    assert "\n" not in first and first.endswith("."), f"{command}: the description's first paragraph is not one line: {first!r}"
    examples = EXAMPLE.findall(doc)
    assert 2 <= len(examples) <= 3, f"{command}: {len(examples)} examples, expected 2 or 3"
    manual = MANUAL.findall(doc)
    pages = PAGE.findall(manual[0]) if manual else []
    assert pages, f"{command}: no `Manual: docs/PAGE.md` line"
    for page in pages:
        assert (REPO / page).is_file(), f"{command}: Manual names {page}, which does not exist"
    script = Path(re.search(r"[\w/]+\.py", examples[0]).group(0)).name
    assert script in (REPO / pages[0]).read_text(), f"{command}: {pages[0]} never mentions {script}"


@pytest.mark.slow
def test_help_examples_name_real_scripts_flags_configs_and_keys(tmp_path):
    """The examples are checked as tests/test_docs.py checks the docs' commands."""
    from test_docs import call_problems, doc_calls, read_parsers

    calls, problems = [], []
    for command in COMMANDS:
        text = "\n".join(f"```bash\n{example}\n```" for example in EXAMPLE.findall(help_doc(command)))
        found, wrong = doc_calls(f"{command} --help", text)
        calls, problems = calls + found, problems + wrong
    targets = sorted({call.target for call in calls if call.target} | {("launcher", call.launcher) for call in calls if call.launcher})
    parsers = read_parsers(targets, tmp_path / "parsers.json")
    problems += [problem for call in calls for problem in call_problems(call, parsers)]
    assert not problems, "\n".join(problems)
    assert {call.target[1] for call in calls if call.target} >= {f"scripts/{name}.py" for name in SCRIPT_OF.values()}


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
