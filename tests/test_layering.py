"""The package's layering, kept by a test: an import runs down the layers or sideways, never up,
and no module imports itself back through others (package __init__ files count: importing
`minirt.a.b` runs `minirt/a/__init__.py` first).

    config, sampling     checks, config, hf_config, sampling_params, results, hardware, ports,
                         trace (plain events and their JSON), workload (seeded request sets)
    kernels              kernels, sampler, quant.formats (the layouts the kernels read)
    model, kv, sched     model, kv, sched, quant (layers that swap into the model)
    engine, spec         engine, spec
    moe                  moe
    tools                tools, transfer (copies timed and simulated with tools.streams),
                         trace.compare (runs the engine twice: your part beside minirt's)
    front doors          bench, grading, serve, launch, labs, notebooks, __main__, minirt itself
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "minirt"

LAYERS = [
    [
        "checks",
        "config",
        "hf_config",
        "sampling_params",
        "results",
        "hardware",
        "ports",
        "trace",
        "threads",
        "workload",
    ],
    ["kernels", "sampler", "quant.formats"],
    ["model", "kv", "sched", "quant"],
    ["engine", "spec"],
    ["moe"],
    ["tools", "transfer", "trace.compare"],
    ["bench", "grading", "serve", "launch", "labs", "notebooks", "__main__", ""],
]


def layer_of(module: str) -> int:
    """The layer of `minirt.<module>`: its longest listed prefix decides."""
    name = module.removeprefix("minirt").removeprefix(".")
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for prefix in names:
            hit = name == prefix or name.startswith(prefix + ".") or prefix == ""
            if hit and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> list[tuple[str, int]]:
    """The minirt modules a file imports (anywhere in it, lazy imports too), with line numbers;
    `from minirt.a import b` counts as minirt.a.b when b is a module."""
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "minirt"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package
                base = package.rsplit(".", node.level - 1)[0]
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "minirt":
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub if _is_module(sub, root) else mod, node.lineno))
    return out


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:])
    return (root / rel).with_suffix(".py").exists() or (root / rel / "__init__.py").exists()


def _type_checking_only(path: Path) -> set[int]:
    """Lines under `if TYPE_CHECKING:`: annotations only, never executed."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for inner in node.body:
                lines |= set(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def graph(root: Path = ROOT, parents: bool = True) -> dict[str, list[tuple[str, str]]]:
    """module -> [(imported module, "file:line")], with each module's parent packages added
    (importing minirt.a.b runs minirt.a's __init__ first) unless `parents` is False."""
    edges: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(root.rglob("*.py")):
        this, skip = module_name(path, root), _type_checking_only(path)
        for mod, line in imports(path, root):
            if line in skip:
                continue
            where = f"{path.relative_to(root.parent)}:{line}"
            parts = mod.split(".")
            for k in range(2 if parents else len(parts), len(parts) + 1):
                target = ".".join(parts[:k])
                if target != this and not this.startswith(target + "."):
                    edges.setdefault(this, []).append((target, where))
    return edges


def upward_imports(root: Path = ROOT) -> list[str]:
    bad = []
    for mod, targets in graph(root, parents=False).items():  # a parent's own imports count
        for target, where in targets:  # where the parent is checked, not at every child
            if layer_of(target) > layer_of(mod):
                bad.append(f"{where}: {mod} (layer {layer_of(mod)}) imports {target} "
                           f"(layer {layer_of(target)})")  # fmt: skip
    return sorted(set(bad))


def cycles(root: Path = ROOT) -> list[list[str]]:
    """Import cycles between modules (each as the list of modules on it)."""
    edges = {m: sorted({t for t, _ in ts}) for m, ts in graph(root).items()}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    names = [module_name(p, ROOT) for p in ROOT.rglob("*.py")]
    assert all(layer_of(n) is not None for n in names)


def test_no_import_runs_up_the_layers():
    assert upward_imports() == []


def test_no_module_imports_itself_back():
    assert cycles() == []


def test_the_check_fails_on_a_planted_upward_import_and_cycle(tmp_path):
    planted = tmp_path / "minirt"
    for path in ROOT.rglob("*.py"):
        dest = planted / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(path.read_text())
    pool = planted / "kv" / "pool.py"
    pool.write_text(pool.read_text() + "\nfrom minirt.engine.llm import LLM\n")
    upward = upward_imports(planted)
    assert any("minirt.kv.pool (layer 2) imports minirt.engine" in b for b in upward)
    assert any("minirt.kv.pool" in c for c in cycles(planted))
