"""Every command that README.md and docs/*.md show is checked against the code, and every
relative link and image there resolves.

What counts as a command: each line of a ```bash / ```sh / ```shell block (backslash
continuations joined, `#` comments dropped, split at `&&`, `||`, `|` and `;`), and each inline
code span that starts with a program and has at least one more word
(`python scripts/clean.py --exp NAME`) or is a `carvana-*` name alone. Leading `VAR=value`
assignments and a notebook's `!` are skipped. A fenced block without a language holds no
command (tag it `bash`).

A command of this project is `python` / `python3` / `.venv/bin/python` running a script or a
`-m` module of the repository, a `carvana-*` console script of pyproject.toml, `accelerate
launch` or `torchrun` (with or without such a script after their own flags), `bash` running a
repository shell script, or `make TARGET [VAR=value]`. For each one: the script or module
exists; every flag is one its argument parser defines (the parsers are read in one subprocess
that stops each script at its parse call, so nothing runs; a shell script's flags come from its
`--help`); every `.yaml` it names exists (shell globs allowed); every `key=value` names a field
of carvana_seg.config and goes to a script that takes overrides; make's targets and variables
are in the Makefile. A command of another program passes only when EXTERNAL lists it; any
other command fails, so a new program is added there deliberately.

Placeholders in a command (any command, another tool's too): an ALL-CAPS word stands for what
the user fills in, alone or inside a word (`--exp NAME`, `data.root=DIR`,
`submissions/NAME.recipe.json`), and `...` for arguments shown elsewhere; neither is checked
beyond the flag before it. `<name>` is not used in a command, since the shell reads `<` and `>`
as redirections; it marks the varying part of a path in prose and file trees only
(`runs/<exp>/fold<k>/`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import importlib
import json
import re
import runpy
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import unquote

import pytest

from carvana_seg.config import config_keys

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHONS = {"python", "python3", ".venv/bin/python"}
LAUNCHERS = {"accelerate": ("accelerate.commands.launch", "launch_command_parser"), "torchrun": ("torch.distributed.run", "get_args_parser")}
EXTERNAL = {"kaggle", "pip", "git", "cd", "ls", "unzip", "nvidia-smi", "mkdir", "tar", "source", "accelerate config", "ray start"}  # other tools' programs
EXTERNAL_MODULES = {"pytest", "pip"}  # other tools' `python -m` modules
KAGGLE_CODE = "/kaggle/input/carvana-seg-code/"  # the repository's src/ and scripts/ as a Kaggle dataset (docs/offline.md)
SHELL_LANGS = {"bash", "sh", "shell"}
ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")
OVERRIDE = re.compile(r"[\w.]+=")
PLACEHOLDER = re.compile(r"(?<![a-z])[A-Z][A-Z0-9_]*(?![a-z])")
ANGLED = re.compile(r"<[\w.-]+>")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LINKS = [re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)"), re.compile(r"^\s*\[[^\]]+\]:\s*<?([^\s>]+)>?", re.M)]
SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:")


@dataclasses.dataclass(frozen=True)
class Call:
    """One command of this project as a doc shows it."""

    where: str  # doc:line
    text: str
    target: tuple[str, str] | None  # (kind, name), kind: script, module, entry, shell or make; None: a launcher alone
    args: tuple[str, ...] = ()
    launcher: str | None = None  # accelerate (launch) or torchrun
    launcher_args: tuple[str, ...] = ()


@functools.cache
def console_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@functools.cache
def program_words() -> frozenset[str]:
    return frozenset(PYTHONS | set(LAUNCHERS) | {"bash", "make"} | set(console_scripts()) | {e.split()[0] for e in EXTERNAL})


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def blank(match: re.Match) -> str:
    return re.sub(r"[^\n]", " ", match.group(0))


# --- finding the commands -------------------------------------------------------------------


def fenced_lines(doc: str, text: str) -> list[tuple[str, str]]:
    """(doc:line, command line) of every line of the shell blocks, continuations joined."""
    found = []
    for block in FENCE.finditer(text):
        if block.group(1) not in SHELL_LANGS:
            continue
        number = line_of(text, block.start(2))
        for line in re.sub(r"\\\n[ \t]*", "\0", block.group(2)).split("\n"):
            command = line.replace("\0", " ").strip()
            if command and not command.startswith("#"):
                found.append((f"{doc}:{number}", command))
            number += line.count("\0") + 1
    return found


def inline_spans(doc: str, text: str) -> list[tuple[str, str]]:
    """(doc:line, span) of the inline code spans that are commands (see the module docstring)."""
    prose = FENCE.sub(blank, text)
    found = []
    for span in INLINE.finditer(prose):
        command = " ".join(span.group(1).split())
        head = without_assignments(command.removeprefix("!").split())
        if (len(head) > 1 and head[0] in program_words()) or re.fullmatch(r"carvana-[a-z]+(-[a-z]+)*", command):
            found.append((f"{doc}:{line_of(prose, span.start())}", command))
    return found


def untagged_problems(doc: str, text: str) -> list[str]:
    """A block without a language that holds a command: it would escape the checks."""
    problems = []
    for block in FENCE.finditer(text):
        if block.group(1):
            continue
        for offset, line in enumerate(block.group(2).split("\n")):
            words = without_assignments(line.split())
            if words and words[0] in program_words():
                problems.append(f"{doc}:{line_of(text, block.start(2)) + offset}: a block without a language holds a command: tag it ```bash  [{line.strip()}]")
    return problems


def shell_words(command: str) -> list[list[str]]:
    """The commands of one line, split at `&&`, `||`, `|` and `;` (quotes kept, comments dropped)."""
    lexer = shlex.shlex(command.removeprefix("!"), posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for word in lexer:
        if word in {"&&", "||", "|", ";"}:
            segments.append([])
        else:
            segments[-1].append(word)
    return [words for words in segments if words]


def without_assignments(words: list[str]) -> list[str]:
    while words and ASSIGNMENT.match(words[0]):
        words = words[1:]
    return words


def repo_file(word: str) -> str:
    """A path a command runs, relative to the repository root (the Kaggle code dataset stands for it)."""
    path = word.removeprefix(KAGGLE_CODE)
    full = (REPO / path).resolve()
    if Path(path).is_absolute() or not full.is_relative_to(REPO) or not full.is_file():
        raise ValueError(f"{word}: no such file in the repository")
    return full.relative_to(REPO).as_posix()


def parse_call(where: str, text: str, words: list[str]) -> Call | None:
    """The project command in `words`; None for an EXTERNAL program; ValueError for anything else."""
    words = without_assignments(words)
    if not words:
        raise ValueError("only variable assignments, no command")
    program, rest = words[0], tuple(words[1:])
    if program in PYTHONS:
        return python_call(where, text, rest)
    if program.startswith("carvana-"):
        if program not in console_scripts():
            raise ValueError(f"{program} is not a console script of pyproject.toml (those are {', '.join(console_scripts())})")
        return Call(where, text, ("entry", program), rest)
    if program == "bash" and rest and rest[0].endswith(".sh"):
        return Call(where, text, ("shell", repo_file(rest[0])), rest[1:])
    if program == "make":
        return Call(where, text, ("make", "Makefile"), rest)
    if program == "torchrun" or words[:2] == ["accelerate", "launch"]:
        rest = rest if program == "torchrun" else rest[1:]
        script = next((i for i, word in enumerate(rest) if word.endswith(".py")), None)
        if script is None:
            return Call(where, text, None, launcher=program, launcher_args=rest)
        return Call(where, text, ("script", repo_file(rest[script])), rest[script + 1 :], program, rest[:script])
    if program in EXTERNAL or " ".join(words[:2]) in EXTERNAL:
        return None
    raise ValueError(f"unknown program {program!r}: another tool's goes in EXTERNAL (tests/test_docs.py)")


def python_call(where: str, text: str, rest: tuple[str, ...]) -> Call | None:
    if rest[:1] == ("-m",) and len(rest) > 1:
        return None if rest[1].split(".")[0] in EXTERNAL_MODULES else Call(where, text, ("module", rest[1]), rest[2:])
    if rest and rest[0].endswith(".py"):
        return Call(where, text, ("script", repo_file(rest[0])), rest[1:])
    raise ValueError("python without a script or a -m module")


def doc_calls(doc: str, text: str) -> tuple[list[Call], list[str]]:
    """The project commands of one Markdown text, and the problems found while reading them."""
    calls, problems = [], untagged_problems(doc, text)
    for where, line in fenced_lines(doc, text) + inline_spans(doc, text):
        try:
            commands = shell_words(line)
            angled = [word for words in commands for word in words if ANGLED.search(word)]
            problems += [f"{where}: {word}: write placeholders in ALL CAPS (the shell reads < and > as redirections)  [{line}]" for word in angled]
            calls += [call for words in commands if (call := parse_call(where, line, words))]
        except ValueError as err:
            problems.append(f"{where}: {err}  [{line}]")
    return calls, problems


# --- checking them --------------------------------------------------------------------------


def call_problems(call: Call, parsers: dict[tuple[str, str], dict]) -> list[str]:
    words = call.launcher_args + call.args
    paths = [word.rpartition("=")[2] for word in words if word.endswith((".yaml", ".yml"))]  # --config=FILE too
    problems = [f"{path}: no such file" for path in paths if not PLACEHOLDER.search(path) and not glob.glob(str(REPO / path))]
    if call.launcher:
        problems += flag_problems(call.launcher_args, parsers["launcher", call.launcher], call.launcher)
    if call.target and call.target[0] == "make":
        problems += make_problems(call.args)
    elif call.target:
        problems += flag_problems(call.args, parsers[call.target], call.target[1])
    return [f"{call.where}: {problem}  [{call.text}]" for problem in problems]


def flag_problems(args: tuple[str, ...], parser: dict, name: str) -> list[str]:
    if "error" in parser:
        return [f"{name}: its parser could not be read: {parser['error']}"]
    problems = []
    for word in args:
        if re.match(r"-[^\d]", word) and word.split("=", 1)[0] not in parser["options"]:
            problems.append(f"{name} has no {word.split('=', 1)[0]}")
        elif OVERRIDE.match(word) and not parser["overrides"]:
            problems.append(f"{name} takes no key=value settings ({word})")
        elif OVERRIDE.match(word) and not is_config_key(word.split("=", 1)[0]):
            problems.append(f"{word.split('=', 1)[0]} is not a config key (src/carvana_seg/config.py)")
    return problems


def is_config_key(key: str) -> bool:
    return key in config_keys()


def make_problems(args: tuple[str, ...]) -> list[str]:
    makefile = (REPO / "Makefile").read_text()
    targets = {name for line in re.findall(r"^([\w.%/ -]+?)\s*::?(?!=)", makefile, re.M) for name in line.split()}
    variables = set(re.findall(r"^([A-Za-z_]\w*)\s*[?:+]?=", makefile, re.M))
    problems = []
    for word in args:
        if ASSIGNMENT.match(word) and word.split("=", 1)[0] not in variables:
            problems.append(f"the Makefile has no variable {word.split('=', 1)[0]}")
        elif not ASSIGNMENT.match(word) and word not in targets:
            problems.append(f"the Makefile has no target {word}")
    return problems


# --- reading the parsers (in a subprocess: `python tests/test_docs.py OUT.json KIND NAME ...`) ---


class Parsed(BaseException):
    """Raised at a script's parse call with its parser, so that the script goes no further."""


def stop_at_parse(parser: argparse.ArgumentParser, *args, **kwargs):
    raise Parsed(parser)


def parser_of(kind: str, name: str) -> argparse.ArgumentParser:
    if kind == "launcher":
        module, function = LAUNCHERS[name]
        return getattr(importlib.import_module(module), function)()
    sys.argv = [name]
    try:
        if kind == "script":
            sys.path[0] = str((REPO / name).parent)
            runpy.run_path(str(REPO / name), run_name="__main__")
        elif kind == "module":
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        else:
            module, _, function = console_scripts()[name].partition(":")
            getattr(importlib.import_module(module), function)()
    except Parsed as parsed:
        return parsed.args[0]
    raise LookupError("it returned without parsing its arguments")


def describe(kind: str, name: str) -> dict:
    """The flags a command takes and whether it takes key=value settings, or why they are unknown."""
    if kind == "shell":
        done = subprocess.run(["bash", name, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
        if done.returncode:
            return {"error": f"--help exited {done.returncode}: {done.stderr.strip()[-300:]}"}
        return {"options": re.findall(r"^ {1,4}(-{1,2}[\w-]+)", done.stdout, re.M), "overrides": False}
    try:
        actions = parser_of(kind, name)._actions
    except (Exception, SystemExit) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    return {
        "options": sorted(option for action in actions for option in action.option_strings),
        "overrides": any(action.dest == "overrides" and not action.option_strings for action in actions),
    }


def dump_parsers(out: str, pairs: list[str]) -> None:
    argparse.ArgumentParser.parse_known_args = stop_at_parse  # every parse_* call goes through it
    targets = list(zip(pairs[::2], pairs[1::2]))
    Path(out).write_text(json.dumps([[kind, name, describe(kind, name)] for kind, name in targets]))


def read_parsers(targets: list[tuple[str, str]], out: Path) -> dict[tuple[str, str], dict]:
    pairs = [word for target in targets for word in target]
    done = subprocess.run([sys.executable, __file__, str(out), *pairs], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {(kind, name): parser for kind, name, parser in json.loads(out.read_text())}


# --- links ------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub(blank, path.read_text()), re.M):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)  # a repeated heading gets -1, -2, ...
        seen[base] = seen.get(base, 0) + 1
    return found


def link_problems(doc: Path, root: Path) -> list[str]:
    """Every relative link and image of one Markdown file that names no file or heading in `root`."""
    text = INLINE.sub(blank, FENCE.sub(blank, doc.read_text()))
    problems = []
    for match in (match for pattern in LINKS for match in pattern.finditer(text)):
        target = unquote(match.group(1))
        if not target or SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        where = f"{doc.relative_to(root)}:{line_of(text, match.start())}: {target}"
        if path.startswith("/") or not dest.is_relative_to(root) or not dest.exists():
            problems.append(f"{where}: no such file in the repository")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            problems.append(f"{where}: no heading there has the anchor #{anchor}")
        elif ignored_by_git(dest, root):
            problems.append(f"{where}: ignored by git, so a fresh clone lacks it")
    return problems


def ignored_by_git(path: Path, root: Path) -> bool:
    return subprocess.run(["git", "-C", str(root), "check-ignore", "-q", str(path)], capture_output=True).returncode == 0


# --- the tests --------------------------------------------------------------------------------

BAD_DOC = """
```bash
python scripts/clean.py --exp NAME --dry-run       # fine
python scripts/clean.py --exp NAME --no-such-flag
python scripts/no_such_script.py --exp NAME
python scripts/train_cv.py --config configs/demo/no_such.yaml data.no_such_key=1
python scripts/clean.py data.root=DIR
frobnicate --all
make no-such-target NO_SUCH_VAR=1
python scripts/check_submission.py <file> --sample sample.csv
pip install <package>
```

```
python scripts/clean.py --exp NAME
```

The inline `carvana-nope`, `python scripts/tune.py --exp NAME --tta hflip` (fine) and
`accelerate launch --no-such-launcher-flag scripts/train_fold.py --fold 0`.
"""
BAD_DOC_PROBLEMS = [
    "bad.md:4: scripts/clean.py has no --no-such-flag",
    "bad.md:5: scripts/no_such_script.py: no such file in the repository",
    "bad.md:6: configs/demo/no_such.yaml: no such file",
    "bad.md:6: data.no_such_key is not a config key",
    "bad.md:7: scripts/clean.py takes no key=value settings (data.root=DIR)",
    "bad.md:8: unknown program 'frobnicate'",
    "bad.md:9: the Makefile has no target no-such-target",
    "bad.md:9: the Makefile has no variable NO_SUCH_VAR",
    "bad.md:10: <file>: write placeholders in ALL CAPS",
    "bad.md:11: <package>: write placeholders in ALL CAPS",
    "bad.md:15: a block without a language holds a command",
    "bad.md:18: carvana-nope is not a console script",
    "bad.md:19: accelerate has no --no-such-launcher-flag",
]


def all_calls() -> tuple[list[Call], list[str]]:
    calls, problems = [], []
    for doc in DOCS:
        found, wrong = doc_calls(doc.relative_to(REPO).as_posix(), doc.read_text())
        calls, problems = calls + found, problems + wrong
    return calls, problems


@pytest.fixture(scope="module")
def parsers(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """The parsers of every command the docs and BAD_DOC name, read in one subprocess, so the
    imports they share (torch, the package) are paid once."""
    calls = all_calls()[0] + doc_calls("bad.md", BAD_DOC)[0]
    targets = sorted({call.target for call in calls if call.target and call.target[0] != "make"} | {("launcher", c.launcher) for c in calls if c.launcher})
    return read_parsers(targets, tmp_path_factory.mktemp("parsers") / "parsers.json")


@pytest.mark.slow
def test_every_command_in_the_docs_is_known_and_matches_the_code(parsers):
    calls, problems = all_calls()
    problems += [problem for call in calls for problem in call_problems(call, parsers)]
    assert not problems, "\n".join(problems)
    assert len({call.target for call in calls}) > 20, "the docs' commands were not found"


@pytest.mark.slow
def test_a_wrong_command_is_reported_with_its_line(parsers):
    calls, problems = doc_calls("bad.md", BAD_DOC)
    problems += [problem for call in calls for problem in call_problems(call, parsers)]
    for expected in BAD_DOC_PROBLEMS:
        assert any(problem.startswith(expected) for problem in problems), f"{expected!r} not in:\n" + "\n".join(problems)
    assert len(problems) == len(BAD_DOC_PROBLEMS), "\n".join(problems)


def test_every_relative_link_and_image_resolves():
    problems = [problem for doc in DOCS for problem in link_problems(doc, REPO)]
    assert not problems, "\n".join(problems)


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("runs/\n")
    for folder in ("docs", "runs"):
        (tmp_path / folder).mkdir()
    (tmp_path / "runs" / "out.md").write_text("made by a run\n")
    (tmp_path / "docs" / "b.md").write_text("# Title\n\n## Folds in parallel (`--parallel`)\n\n## Title\n")
    (tmp_path / "a.md").write_text(
        "[ok](docs/b.md#folds-in-parallel---parallel) [ok](docs/b.md#title-1) [ok](#top) ![img](docs/b.md) [web](https://x.org/y)\n"
        "[missing](docs/c.md) [bad anchor](docs/b.md#no-such) [outside](../x.md) `[in code](nowhere.md)`\n"
        "[a run's](runs/out.md)\n\n# Top\n"
    )
    problems = link_problems(tmp_path / "a.md", tmp_path)
    assert problems == [
        "a.md:2: docs/c.md: no such file in the repository",
        "a.md:2: docs/b.md#no-such: no heading there has the anchor #no-such",
        "a.md:2: ../x.md: no such file in the repository",
        "a.md:3: runs/out.md: ignored by git, so a fresh clone lacks it",
    ]


if __name__ == "__main__":
    dump_parsers(sys.argv[1], sys.argv[2:])
