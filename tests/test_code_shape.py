"""Code shape: every function in src/ fits in MAX_FUNCTION_LINES lines (decorators to last line),
so each one can be read on one screen."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES = 60


def long_functions(source: str, name: str) -> list[str]:
    """`<name>:<line> <function> (<n> lines)` for each function or method over the limit."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
            lines = node.end_lineno - first + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_src_is_over_the_limit():
    modules = sorted(SRC.rglob("*.py"))
    assert modules, f"no Python modules under {SRC}"
    found = [hit for path in modules for hit in long_functions(path.read_text(), str(path.relative_to(SRC)))]
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them into named parts): " + "; ".join(found)


def test_the_check_names_a_long_function_and_counts_its_decorators():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 2))
    at_limit = f"@staticmethod\ndef fits():\n{body}"  # decorator + def + body = the limit
    over = "class A:\n    @property\n    @staticmethod\n    def too_long(self):\n" + body.replace("    ", "        ")
    assert long_functions(at_limit, "m.py") == []
    assert long_functions(over, "m.py") == [f"m.py:4 too_long ({MAX_FUNCTION_LINES + 1} lines)"]
