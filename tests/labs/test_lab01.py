"""Lab 1, task 4: the learner's block books run the engine (`LLM(prefix_cache=HashBlocks)`) and
are graded by what the engine then does, step by step beside minirt's "hash" books.

(Full marks for the solution and 0 for the student notebook are in test_grading.py, for every
lab.) The notebook's cells run into a namespace here, as the grader's worker runs them: faster
than a process per task.
"""

from __future__ import annotations

import linecache
from pathlib import Path

import nbformat
import pytest

from minirt.grading import grade_notebook, lab01, run_task
from minirt.grading.runner import notebook_cells

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labs" / "source" / "lab01_kv_blocks.ipynb"
TASK = next(t for t in lab01.TASKS if t.id == "4")


def namespace(*edits: tuple[str, str]) -> dict:
    """The solution notebook's cells run with (old, new) edits, each in exactly one cell (the
    cell that serves requests left out: the grader runs its own)."""
    ns: dict = {"__name__": "__main__"}
    cells = notebook_cells(SOURCE)
    for old, _ in edits:
        assert sum(old in src for _, src in cells) == 1, f"the solution changed: {old!r}"
    for number, source in cells:
        if "llm.generate(" in source:
            continue
        for old, new in edits:
            source = source.replace(old, new)
        name = f"<cell {number}>"
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        exec(compile(source, name, "exec"), ns)
    return ns


def test_the_solutions_books_run_the_engine_as_minirts_do():
    result = run_task(TASK, namespace(), seed=0)
    assert (result.status, result.score) == ("passed", TASK.points), result.message


FREE = "                self.free_list[b] = None\n        self.seq_hashes"
BUGS = {  # a planted bug -> (edit, cases passed of 4 with seed 0, what the message says)
    "a freed sequence returns its first block first": (
        ("for b in reversed(self.tables.pop(seq_id)):", "for b in self.tables.pop(seq_id):"),
        0,
        ["block table: yours", "minirt's"],
    ),
    "a freed block forgets its hash": (
        (FREE, FREE.replace("= None\n", "= None\n                self._forget(b)\n")),
        0,
        ["cached blocks: yours"],
    ),
    "the last prompt token is matched too": (
        (
            "chain_hashes(token_ids[:-1], self.block_size)",
            "chain_hashes(token_ids, self.block_size)",
        ),
        3,
        ["nothing to compute: the last prompt token was matched"],
    ),
}


@pytest.mark.parametrize("bug", BUGS)
def test_a_planted_bug_loses_the_cases_it_shows_in_and_says_why(bug):
    edit, passed, says = BUGS[bug]
    result = run_task(TASK, namespace(edit), seed=0)
    assert result.status == "wrong" and result.cases_passed == passed, result.message
    assert 0 <= result.score < TASK.points
    assert all(fragment in result.message for fragment in says), result.message


HOLDS_MINIRTS = '''
from minirt import LLM


class HashBlocks:
    """Books that hold minirt's own, reached through an engine, and forward every call."""

    def __init__(self, num_blocks, block_size):
        kv = num_blocks * block_size * 8192
        self.inner = LLM(device="cpu", block_size=block_size, kv_cache_bytes=kv).block_manager

    def __getattr__(self, name):
        return getattr(self.inner, name)
'''


def test_books_that_hold_minirts_books_are_refused_by_the_object_check():
    ns = namespace()
    exec(HOLDS_MINIRTS, ns)
    result = run_task(TASK, ns, seed=0)
    assert (result.status, result.score) == ("refused", 0), result.message
    assert "your HashBlocks.inner: holds a minirt.kv.block_manager.BlockManager" in result.message


CHEATS = {  # what the source check refuses in the learner's cell, whatever the rest does
    "minirt's books by name": "from minirt.kv import BlockManager as HashBlocks",
    "minirt's books by the registry": "HashBlocks = dict(hash=1)\nname = 'hash'",
}


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_notebook_handing_minirts_books_back_scores_0(cheat, tmp_path):
    nb = nbformat.read(SOURCE, as_version=4)
    cell = next(c for c in nb.cells if c.source.startswith("class HashBlocks(BlockBooks)"))
    cell.source += "\n\n" + CHEATS[cheat]
    path = tmp_path / SOURCE.name
    nbformat.write(nb, path)
    report = grade_notebook(path, seed=0)
    assert report.score == 0 and {r.status for r in report.results} == {"refused"}
    assert "refused" in report.results[0].message


def test_the_allocators_verdict_is_made_in_the_parent_from_the_workers_record(tmp_path):
    """Task 2: the worker drives only the learner's allocator and sends what it answered; a
    worker that claims full marks for an allocator whose fork shares nothing is judged on that
    record here, beside minirt's BlockManager driven through the same operations."""
    import json

    from minirt.grading import replay
    from minirt.grading.runner import _verdict
    from tests.labs.common import cells_into_namespace, planted
    from tests.labs.test_runner import Pipe

    task = next(t for t in lab01.TASKS if t.id == "2")
    assert task.play is not None and task.judged_apart
    recording = replay.Recording(task)
    fork = ("            self.ref_count[b] += 1\n", "            pass\n")
    ns = cells_into_namespace(planted(SOURCE, tmp_path, fork), lambda src: "llm.generate(" in src)
    worker = run_task(task, ns, 0, play=recording.player(ns), judge=False)
    assert worker.status == "passed" and len(recording.cases) == task.num_cases  # nothing judged
    sent = json.loads(json.dumps({"result": worker.to_dict(), "cases": recording.cases}))
    result = _verdict(sent, task, 0, Pipe(), 0)
    assert result.status == "wrong" and result.score < task.points, result.message
    assert "a.fork(" in result.message and "(minirt's count: 2)" in result.message
