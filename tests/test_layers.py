"""The package floors hold: nothing in src/carvana_seg imports upward, nor a sibling on its own
floor unless listed below; ops/ stands on errors alone; scripts/*.py are shims of commands/.

Bottom up: errors, io_utils, names, locks -> ops -> config -> data, models -> store ->
recipe, training, cleanup -> inference -> reporting -> commands -> scripts. Every import
counts, also one inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "carvana_seg"

FLOORS = {
    "errors": 0, "io_utils": 0, "names": 0, "locks": 0,
    "ops": 1,
    "config": 2,
    "data": 3, "models": 3,
    "store": 4,
    "recipe": 5, "training": 5, "cleanup": 5,
    "inference": 6,
    "reporting": 7,
    "commands": 8,
}  # fmt: skip
# Imports between different units of one floor, (importer, imported): the only ones allowed.
SIBLINGS = {
    ("names", "errors"), ("locks", "errors"),
    ("training", "recipe"),
}  # fmt: skip
OPS_MAY_IMPORT = {"errors", "ops"}
SHIM_LINES = 15


FACE = "__init__"  # carvana_seg/__init__.py: a docstring and __version__, importable from any floor


def unit_of(module: str) -> str | None:
    """The unit of a dotted module name inside carvana_seg (its first part; FACE for the package
    itself), else None."""
    parts = module.split(".")
    if parts[0] != "carvana_seg":
        return None
    return parts[1] if len(parts) > 1 else FACE


def imported_modules(tree: ast.Module, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in a module's tree, relative ones resolved; for
    `from carvana_seg import x`, the module `carvana_seg.x`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == "carvana_seg":  # `from carvana_seg import config`: the submodule; `__version__`: the face
                found += [(node.lineno, f"carvana_seg.{a.name}" if is_unit(a.name) else base) for a in node.names]
            else:
                found.append((node.lineno, base))
    return found


def is_unit(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def module_name(path: Path) -> str:
    """`carvana_seg.ops.rle` for src/carvana_seg/ops/rle.py, `carvana_seg.ops` for its __init__.py."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> list[tuple[Path, str]]:
    return [(path, module_name(path)) for path in sorted(PACKAGE.rglob("*.py"))]


def layer_problems(path: Path, module: str, source: str) -> list[str]:
    """What one module of carvana_seg imports against the floors."""
    unit = unit_of(module)
    if unit == FACE:
        imports = imported_modules(ast.parse(source), module, True)
        return [f"{path}:{line}: the package's face imports {name}" for line, name in imports if unit_of(name)]
    if unit not in FLOORS:
        return [f"{path}: {unit!r} has no floor in tests/test_layers.py FLOORS"]
    problems = []
    tree = ast.parse(source)
    for line, imported in imported_modules(tree, module, path.name == "__init__.py"):
        other = unit_of(imported)
        if other is None or other in (unit, FACE):
            continue
        where = f"{path.relative_to(REPO)}:{line}: {unit} (floor {FLOORS[unit]}) imports {imported}"
        if other not in FLOORS:
            problems.append(f"{where}, which has no floor")
        elif FLOORS[other] > FLOORS[unit]:
            problems.append(f"{where} (floor {FLOORS[other]}): upward")
        elif FLOORS[other] == FLOORS[unit] and (unit, other) not in SIBLINGS:
            problems.append(f"{where}: a sibling on the same floor, not listed in SIBLINGS")
        elif unit == "ops" and other not in OPS_MAY_IMPORT:
            problems.append(f"{where}: ops/ imports only {sorted(OPS_MAY_IMPORT)}")
    return problems


def test_every_unit_has_a_floor_and_every_listed_one_exists():
    units = {unit_of(module) for _, module in package_modules()} - {FACE}
    assert units == set(FLOORS), f"units without a floor: {sorted(units - set(FLOORS))}; floors without a unit: {sorted(set(FLOORS) - units)}"
    assert all(FLOORS[a] == FLOORS[b] for a, b in SIBLINGS), "SIBLINGS lists a pair on different floors"


def test_nothing_imports_upward_or_sideways():
    problems = [problem for path, module in package_modules() for problem in layer_problems(path, module, path.read_text())]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "unit, planted",
    [
        ("ops", "from carvana_seg.config import Config"),  # upward
        ("ops", "from carvana_seg import names"),  # below, but ops stands on errors alone
        ("data", "from carvana_seg.models import build_model"),  # a sibling on floor 3
        ("recipe", "from carvana_seg.training import trainer"),  # the sibling direction not allowed
        ("store", "import carvana_seg.inference.submit"),  # upward, as a plain import
        ("config", "def lazy():\n    from carvana_seg.commands import cli"),  # inside a function
    ],
)
def test_a_planted_import_is_caught(unit, planted):
    path = next(p for p, module in package_modules() if unit_of(module) == unit and p.name != "__init__.py")
    module = module_name(path)
    source = path.read_text()
    assert not layer_problems(path, module, source)
    assert layer_problems(path, module, f"{source}\n{planted}\n"), planted


def test_a_relative_import_is_resolved():
    path = PACKAGE / "ops" / "metrics.py"
    assert layer_problems(path, "carvana_seg.ops.metrics", "from ..config import Config\n")
    assert not layer_problems(path, "carvana_seg.ops.metrics", "from .rle import Runs\nfrom ..errors import PipelineError\n")


@pytest.mark.parametrize("script", sorted((REPO / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_scripts_are_shims_of_a_command(script):
    source = script.read_text()
    assert len(source.splitlines()) <= SHIM_LINES, f"{script.name}: {len(source.splitlines())} lines; its logic belongs in carvana_seg/commands/"
    imported = [name for _, name in imported_modules(ast.parse(source), script.stem, False)]
    assert imported and all(name.startswith("carvana_seg.commands.") for name in imported), f"{script.name} imports {imported}"
