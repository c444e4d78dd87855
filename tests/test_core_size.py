"""No function in the runtime core is longer than 60 lines: the core is what a learner
reads beside the notebooks, and a longer function is a sign to split it. The core: engine, kv,
sched, model (without the training script and its corpus), spec, config, sampling_params and
sampler. A function's length runs from its `def` line to its last line (decorators excluded);
a method is named Class.method, a nested function outer.inner."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "minirt"
PACKAGES = ("engine", "kv", "sched", "model", "spec")
MODULES = ("config.py", "sampling_params.py", "sampler.py")
NOT_CORE = ("model/train.py", "model/corpus.py")
MAX_LINES = 60


def core_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    files += [ROOT / m for m in MODULES]
    return [p for p in files if p.relative_to(ROOT).as_posix() not in NOT_CORE]


def function_lengths(path: Path) -> dict[str, int]:
    """Every function and method of the file (nested ones too) -> its length in lines."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    out[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), str(path)), "")
    return out


def lengths() -> dict[str, int]:
    """`file:function` -> length, over the whole core."""
    return {
        f"{path.relative_to(ROOT).as_posix()}:{name}": n
        for path in core_files()
        for name, n in function_lengths(path).items()
    }


def test_no_core_function_is_longer_than_60_lines():
    too_long = {k: n for k, n in lengths().items() if n > MAX_LINES}
    assert too_long == {}, f"split these (at most {MAX_LINES} lines each): {too_long}"


def test_the_measure_counts_from_the_def_line_without_decorators(tmp_path):
    path = tmp_path / "m.py"
    lines = ["@dec", "def f():", "    pass", "class C:", "    def g(self):", "        def h():"]
    path.write_text("\n".join([*lines, "            return 1", "        return h", ""]))
    assert function_lengths(path) == {"f": 2, "C.g": 4, "C.g.h": 2}
