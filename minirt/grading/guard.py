"""The grading guard: the part a lab grades must be the learner's own code, not minirt's.

A lab's grader names what its tasks are compared with (`FORBIDDEN`: modules, names, strings that
reach them). Two checks refuse a notebook that hands minirt's part back as its own, each with a
message that says what was found, where, and why: `check_source` reads the AST of the learner's
cells (imports, names, dynamic imports, computed `getattr`, the part's registry names as strings);
`check_objects` looks at what the cells defined (a function's or a class's module, its MRO, the
globals its code refers to, and those of the notebook's helpers it calls; the attributes of an
instance the grader built). In every lab that has
such a list the learner's cells may not reach the grader itself (`minirt.grading`, but for
`self_check`) nor change what they imported (`module.name = ...`, `setattr(module, ...)`): the
grader and the engine it runs must be the ones shipped.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Ways to reach any module or run code chosen at run time: refused in the learner's cells of a
# lab that has a FORBIDDEN list (no lab's tasks need them).
DYNAMIC = {
    "__import__": "imports a module chosen at run time",
    "importlib": "imports a module chosen at run time",
    "runpy": "runs a module chosen at run time",
    "builtins": "reaches __import__ and exec through the builtins",
    "__builtins__": "reaches __import__ and exec through the builtins",
    "exec": "runs code built at run time",
    "eval": "runs code built at run time",
    "compile": "builds code at run time",
    "__globals__": "reaches a function's module, and from there any module",
    "__subclasses__": "reaches any class by walking the class tree",
    "__code__": "swaps a function's code",
    "gc": "reaches any live object through the garbage collector",
    "_getframe": "reaches the grader's frames and their variables",
    "currentframe": "reaches the grader's frames and their variables",
    "f_back": "reaches the grader's frames and their variables",
    "f_locals": "reaches the grader's frames and their variables",
    "f_globals": "reaches the grader's frames and their variables",
    "tb_frame": "reaches the grader's frames and their variables",
    "ctypes": "writes to memory directly",
}

# The grader: a learner's cell may import `self_check` from it, nothing else.
GRADER = "minirt.grading"
GRADER_ALLOWED = {"self_check"}
GRADER_WHY = (
    "reaches the grader (minirt.grading) — refused: the grader must run as shipped; a cell may "
    "import only self_check from it"
)


@dataclass(frozen=True)
class Forbidden:
    """What a lab grades, as it can be reached from a notebook.

    `modules`: the graded implementation (a module and everything below it);
    `names`: names that reach it (`RadixCache`, `PREFIX_CACHES`), as an import, a name or an
    attribute; `strings`: literals that reach it through a registry (`"radix"`);
    `what`: how the message calls it ("minirt's radix cache").
    """

    modules: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    strings: tuple[str, ...] = ()
    what: str = "minirt's implementation of this lab's part"
    # a module's last name that is also an everyday word (`policy`): not refused by itself
    allow: tuple[str, ...] = ()

    def module_is_forbidden(self, module: str | None) -> bool:
        return bool(module) and any(module == m or module.startswith(m + ".") for m in self.modules)

    @property
    def all_names(self) -> set[str]:
        # a module's own name reaches it as an attribute (`minirt.kv.radix_cache`)
        return (set(self.names) | {m.rsplit(".", 1)[-1] for m in self.modules}) - set(self.allow)


@dataclass(frozen=True)
class Refusal:
    where: str  # "cell 7, line 3" or "MyCache.allocate"
    found: str  # what was found, as written
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.found} {self.why}"


def _refused(forbidden: Forbidden) -> str:
    return (
        f"— refused: this lab grades your own code against {forbidden.what}, so it may not "
        "use it; write the part yourself"
    )


def check_source(
    cells: list[tuple[int, str]], forbidden: Forbidden, imported: Iterable[str] = ()
) -> list[Refusal]:
    """Refusals for the learner's cells `(cell number, Python source)`; [] when clean. A cell
    that does not parse is skipped here (the grader reports it when it runs the cell).
    `imported`: names the notebook's other cells import (`torch`, `LLM`): assigning to their
    attributes changes code the grader runs."""
    out: list[Refusal] = []
    trees = []
    for number, source in cells:
        try:
            trees.append((number, ast.parse(source)))
        except SyntaxError:
            continue
    modules = set(imported) | {n for _, tree in trees for n in imported_names(tree)}
    for number, tree in trees:
        for node in ast.walk(tree):
            problems = [*_node_problems(node, forbidden), *_grader_problems(node)]
            problems += _patch_problems(node, modules)
            for found, why in problems:
                where = f"cell {number}, line {getattr(node, 'lineno', '?')}"
                out.append(Refusal(where, found, why))
    return out


def imported_names(tree: ast.AST) -> set[str]:
    """The names import statements bind in `tree` (`import a.b` binds `a`)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out |= {a.asname or a.name for a in node.names if a.name != "*"}
    return out


def _grader_problems(node: ast.AST):
    """Imports and attributes that reach minirt.grading (but for self_check)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == GRADER or alias.name.startswith(GRADER + "."):
                yield f"`import {alias.name}`", GRADER_WHY
    elif isinstance(node, ast.ImportFrom) and node.module:
        grader = node.module == GRADER or node.module.startswith(GRADER + ".")
        for alias in node.names:
            reaches = f"{node.module}.{alias.name}" == GRADER
            if reaches or (grader and alias.name not in GRADER_ALLOWED):
                yield f"`from {node.module} import {alias.name}`", GRADER_WHY
    elif isinstance(node, ast.Attribute) and node.attr == "grading":
        yield "the attribute `.grading`", GRADER_WHY


def _root(node: ast.AST) -> str | None:
    """`a` for `a.b.c`, `a.b[0]`, `a[1].c`; None for anything else."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


GRADER_PART = Forbidden(modules=(GRADER,), what="the grader (minirt.grading)")

PATCH_WHY = (
    "changes what was imported (a module, a class or a function the grader and the engine run "
    "too) — refused: write your own code instead of patching theirs"
)


def _patch_problems(node: ast.AST, modules: set[str]) -> list[tuple[str, str]]:
    """Assignments and deletions into an imported name's attributes, and setattr/delattr on one:
    monkeypatching, which would change minirt (or the grader) for every run of the process."""
    targets: list[ast.AST] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    elif isinstance(node, ast.Delete):
        targets = list(node.targets)
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("setattr", "delattr")
        and node.args
        and _root(node.args[0]) in modules
    ):
        return [(f"`{node.func.id}({_root(node.args[0])}, …)`", PATCH_WHY)]
    flat = []
    while targets:
        t = targets.pop()
        if isinstance(t, (ast.Tuple, ast.List)):
            targets += t.elts
        elif isinstance(t, (ast.Attribute, ast.Subscript)) and _root(t) in modules:
            if ast.unparse(t).startswith("os.environ["):  # an environment variable, not code
                continue
            flat.append((f"`{ast.unparse(t)} = …`", PATCH_WHY))
    return flat


def _node_problems(node: ast.AST, f: Forbidden):
    names, refused = f.all_names, _refused(f)
    if isinstance(node, ast.Import):
        for alias in node.names:
            if f.module_is_forbidden(alias.name):
                yield f"`import {alias.name}`", f"imports {f.what} {refused}"
            elif alias.name.split(".")[0] in DYNAMIC:
                yield f"`import {alias.name}`", f"{DYNAMIC[alias.name.split('.')[0]]} {refused}"
    elif isinstance(node, ast.ImportFrom) and node.module:
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            if (
                f.module_is_forbidden(node.module)
                or f.module_is_forbidden(full)
                or alias.name in names
            ):
                yield f"`from {node.module} import {alias.name}`", f"imports {f.what} {refused}"
            elif node.module.split(".")[0] in DYNAMIC or alias.name in DYNAMIC:
                why = DYNAMIC.get(alias.name, DYNAMIC["importlib"])
                yield f"`from {node.module} import {alias.name}`", f"{why} {refused}"
    elif isinstance(node, ast.Name):
        if node.id in names:
            yield f"the name `{node.id}`", f"is {f.what} {refused}"
        elif node.id in DYNAMIC:
            yield f"`{node.id}`", f"{DYNAMIC[node.id]} {refused}"
    elif isinstance(node, ast.Attribute):
        if node.attr in names:
            yield f"the attribute `.{node.attr}`", f"is {f.what} {refused}"
        elif node.attr == "modules" and isinstance(node.value, ast.Name) and node.value.id == "sys":
            yield "`sys.modules`", f"reaches any imported module by name {refused}"
        elif node.attr in DYNAMIC:
            yield f"the attribute `.{node.attr}`", f"{DYNAMIC[node.attr]} {refused}"
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id == "getattr" and len(node.args) >= 2:
            attr = node.args[1]
            if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
                yield (
                    "`getattr(…)` with a computed attribute name",
                    f"can reach {f.what} without naming it {refused}",
                )
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
        hit = text in names or text in f.strings or any(m in text for m in f.modules)
        if hit:
            yield f"the string {text!r}", f"names {f.what} {refused}"


def check_objects(objects: dict[str, Any], forbidden: Forbidden) -> list[Refusal]:
    """Refusals for the objects the learner's cells defined (by name); [] when clean."""
    out: list[Refusal] = []
    seen: set[int] = set()
    for name, obj in objects.items():
        out += _object_problems(name, obj, forbidden, seen)
    seen = set()
    for name, obj in objects.items():  # and nothing of the grader's
        out += _object_problems(name, obj, GRADER_PART, seen)
    return out


def check_instance(name: str, obj: Any, forbidden: Forbidden) -> list[Refusal]:
    """Refusals for an object built from the learner's class: its type and what it holds (its
    attributes, and the items of lists, dicts and sets among them)."""
    seen: set[int] = set()
    out = _object_problems(name, type(obj), forbidden, seen)
    for attr, value in getattr(obj, "__dict__", {}).items():
        items = [value]
        if isinstance(value, dict):
            items += list(value.values())[:64]
        elif isinstance(value, (list, tuple, set, frozenset)):
            items += list(value)[:64]
        for item in items:
            if _is_forbidden_object(item, forbidden):
                what = f"{type(item).__module__}.{type(item).__qualname__}"
                out.append(
                    Refusal(f"{name}.{attr}", f"holds a {what}", f"from {f_what(forbidden)}")
                )
                break
    return out


def f_what(forbidden: Forbidden) -> str:
    return f"{forbidden.what} {_refused(forbidden)}"


def _is_graded(obj: Any, f: Forbidden) -> bool:
    """A class or function of the graded modules, or a graded one by name of another minirt
    module (lab 1: BlockManager, not block_hash, of minirt.kv.block_manager)."""
    module = getattr(obj, "__module__", None) or ""
    if f.module_is_forbidden(module):
        return True
    return module.startswith("minirt.") and getattr(obj, "__qualname__", "") in f.names


def _is_forbidden_object(obj: Any, f: Forbidden) -> bool:
    if isinstance(obj, types.ModuleType):
        return f.module_is_forbidden(obj.__name__)
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)) and _is_graded(obj, f):
        return True
    cls = obj if isinstance(obj, type) else type(obj)
    return any(_is_graded(c, f) for c in inspect.getmro(cls))


def _object_problems(name: str, obj: Any, f: Forbidden, seen: set[int]) -> list[Refusal]:
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    out: list[Refusal] = []
    if isinstance(obj, functools.partial):
        return _object_problems(name, obj.func, f, seen)
    if isinstance(obj, type):
        for base in inspect.getmro(obj):
            if _is_graded(base, f):
                found = f"{name} derives from {base.__module__}.{base.__qualname__}"
                return [Refusal(name, found, f"— that is {f_what(f)}")]
        for attr, member in vars(obj).items():
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            elif isinstance(member, property):
                member = member.fget
            if isinstance(member, types.FunctionType):
                out += _object_problems(f"{name}.{attr}", member, f, seen)
            elif _is_forbidden_object(member, f):  # a class attribute holding the part
                found = (
                    f"{name}.{attr} holds {getattr(member, '__qualname__', type(member).__name__)}"
                )
                out.append(Refusal(f"{name}.{attr}", found, f"— that is {f_what(f)}"))
        return out
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        func = obj.__func__ if isinstance(obj, types.MethodType) else obj
        if f.module_is_forbidden(func.__module__):
            found = f"{name} is {func.__module__}.{func.__qualname__}"
            return [Refusal(name, found, f"— that is {f_what(f)}")]
        for ref, value in _referenced(func):
            if _is_forbidden_object(value, f):
                mod = getattr(value, "__module__", None) or getattr(value, "__name__", "")
                found = f"{name} uses `{ref}` (from {mod})"
                out.append(Refusal(name, found, f"— that is {f_what(f)}"))
            elif _in_notebook(value) and func.__module__ == NOTEBOOK:
                # a helper the notebook defined: what it uses, the task's function uses
                out += _object_problems(f"{name} (through {ref})", value, f, seen)
        return out
    if _is_forbidden_object(obj, f):
        found = f"{name} is a {type(obj).__module__}.{type(obj).__qualname__}"
        return [Refusal(name, found, f"— that is {f_what(f)}")]
    return out


NOTEBOOK = "__main__"  # the module of what the notebook's cells define (the grader runs them so)


def _in_notebook(obj: Any) -> bool:
    """A function or class the notebook's cells defined."""
    kinds = (types.FunctionType, type)
    return isinstance(obj, kinds) and getattr(obj, "__module__", None) == NOTEBOOK


def _referenced(func: types.FunctionType):
    """(name, object) for the globals and closure variables a function's code refers to, and its
    default arguments (`def f(x, _m=minirt_part)` holds the part without naming it in the body)."""
    codes, names = [func.__code__], set()
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    g = func.__globals__
    for n in sorted(names):
        if n in g:
            yield n, g[n]
        elif hasattr(builtins, n):
            continue
    for n, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=False):
        try:
            yield n, cell.cell_contents
        except ValueError:  # an empty cell
            continue
    defaults = func.__defaults__ or ()
    positional = func.__code__.co_varnames[: func.__code__.co_argcount]
    yield from zip(positional[len(positional) - len(defaults) :], defaults, strict=True)
    yield from (func.__kwdefaults__ or {}).items()
