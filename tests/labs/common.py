"""What the lab tests share: a solution notebook with planted bugs, its cells run in this process
(as the grader's worker runs them), and one torch thread for the tiny models."""

from __future__ import annotations

import linecache
from collections.abc import Callable
from pathlib import Path

import nbformat
import torch

from minirt.grading import run_task
from minirt.grading.runner import notebook_cells


def single_thread():
    """The body of each module's autouse fixture: the embedded models are tiny, one thread is as
    fast and steady on a shared machine (and forked ranks must not inherit an OpenMP pool)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted(source: Path, tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """A copy of the solution notebook with (old, new) source edits, each in exactly one cell."""
    nb = nbformat.read(source, as_version=4)
    for old, new in edits:
        hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(hits) == 1, f"the solution changed: {old!r} is not in exactly one cell"
        hits[0].source = hits[0].source.replace(old, new)
    path = tmp_path / source.name
    nbformat.write(nb, path)
    return path


def cells_into_namespace(path: Path, skip: Callable[[str], bool] = lambda source: False) -> dict:
    """The notebook's graded cells run into one namespace (tracebacks name their cells)."""
    namespace: dict = {"__name__": "__main__"}
    for number, source in notebook_cells(path):
        if skip(source):
            continue
        name = f"<cell {number}>"
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        exec(compile(source, name, "exec"), namespace)
    return namespace


def grade_in_process(path: Path, tasks, keep=lambda task: True, seed: int = 0, **kw) -> dict:
    """{task id: TaskResult} of the kept `tasks`, their cases played on the cells' namespace."""
    namespace = cells_into_namespace(path, **kw)
    return {t.id: run_task(t, namespace, seed=seed) for t in tasks if keep(t)}
