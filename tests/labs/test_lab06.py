"""Lab 6's grader: each planted bug in the radix tree loses its task with a message that names the
difference; the engine task catches what the tree tasks cannot see; code that reaches minirt's
radix cache is refused, by its source or by the objects it builds.

(Full marks for the solution and 0 for the student notebook are in test_grading.py, for every
lab.) Planted bugs run in this process (the cells into one namespace, as the grader's worker runs
them); the refusals go through `grade_notebook`, as a learner's notebook does.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import nbformat
import pytest

from minirt.grading import grade_notebook, lab06
from tests.labs.common import grade_in_process as run_in_process
from tests.labs.common import planted as planted_in
from tests.labs.common import single_thread

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labs" / "source" / "lab06_radix_tree.ipynb"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    yield from single_thread()


planted = partial(planted_in, SOURCE)  # planted(tmp_path, (old, new), ...)


def grade_in_process(path: Path, tasks: set[str]) -> dict:
    def demo(source: str) -> bool:  # the demo at the end: not graded, and slow
        return "LLM(" in source and "def chat" not in source and "chat(" in source

    return run_in_process(path, lab06.TASKS, keep=lambda t: t.id in tasks, skip=demo)


BUGS = {  # a planted bug -> (the tasks it costs, edits, what the first one's message says)
    "match walks on after an edge that agrees only in part": (
        {"1": "wrong"},  # the engine's prompts (256 token ids) rarely leave an edge and agree again
        [("        if k < len(child.key):\n            break\n", "")],
        ["tree of the token lists", "tokens agree; minirt says"],
    ),
    "split forgets the sequences that lock the edge": (
        {"5": "wrong"},  # the tree's shape is right; only the engine sees the lost lock
        [("child.lock_ref, child.last_access, new_id())", "0, child.last_access, new_id())")],
        ["round", "step", "blocks free or evictable: yours"],
    ),
    "insert re-inserts tokens the tree has": (
        {"2": "wrong", "5": "wrong"},
        [("child = Node(list(tokens[m:]), list(slots[m:])", "child = Node(list(tokens), slots")],
        ["insert returned the node of the path", "expected the node of the whole token list"],
    ),
    "lock counts the root too": (
        {"3": "wrong"},
        [
            (
                "    while node.parent is not None:\n        node.lock_ref += d",
                "    while node is not None:\n        node.lock_ref += d",
            )
        ],
        ["the root has lock_ref", "minirt's has 1"],
    ),
    "evict_lru takes the newest leaf first": (
        {"4": "wrong", "5": "wrong"},
        [
            (
                "heap.append((n.last_access, n.node_id, n))",
                "heap.append((-n.last_access, n.node_id, n))",
            )
        ],
        ["minirt removes", "the least recently used unlocked leaf"],
    ),
}


@pytest.mark.parametrize("bug", BUGS)
def test_a_planted_bug_loses_its_tasks_with_partial_credit_and_says_why(bug, tmp_path):
    costs, edits, says = BUGS[bug]
    tasks = {"1", "2", "3", "4", "5"} if len(costs) > 1 or "5" not in costs else {"2", "5"}
    results = grade_in_process(planted(tmp_path, *edits), tasks)
    lost = {t: r.status for t, r in results.items() if r.status != "passed"}
    assert lost == costs
    first = results[min(costs)]
    assert all(fragment in first.message for fragment in says), first.message
    assert "cases fail; the smallest, case" in first.message
    assert first.score < first.points


def test_the_engine_task_names_the_first_step_that_differs(tmp_path):
    edits = [("heap.append((n.last_access, n.node_id, n))", "heap.append((-n.last_access, 0, n))")]
    result = grade_in_process(planted(tmp_path, *edits), {"5"})["5"]
    assert result.status == "wrong"
    assert "step" in result.message and "minirt" in result.message, result.message


DELEGATE = "    from minirt.kv.radix_tree import match as theirs\n    return theirs(root, tokens)\n"
HIDDEN = "MyRadixCache = type(LLM(preset='sg' + 'lang').block_manager)\n\n\n"
CHEATS = {  # how a notebook reaches minirt's radix cache -> what the refusal names
    "imports the tree's match": (
        [
            (
                "    ### BEGIN SOLUTION\n    # HINT: children",
                DELEGATE + "    ### BEGIN SOLUTION\n    # HINT: children",
            )
        ],
        "`from minirt.kv.radix_tree import match`",
    ),
    "builds the engine's radix cache by a name the source does not show": (
        [
            (
                "def show(root: Node, depth: int = 0)",
                HIDDEN + "def show(root: Node, depth: int = 0)",
            )
        ],
        "derives from minirt.kv.radix_cache.RadixCache",
    ),
}


@pytest.mark.parametrize("cheat", CHEATS)
def test_code_that_reaches_minirts_radix_cache_is_refused(cheat, tmp_path):
    edits, says = CHEATS[cheat]
    path = planted(tmp_path, *edits)
    if "preset=" in edits[0][1]:  # the class cell comes later and would redefine it: drop it
        nb = nbformat.read(path, as_version=4)
        nb.cells = [c for c in nb.cells if "class MyRadixCache(" not in c.source]
        nbformat.write(nb, path)
    report = grade_notebook(path, seed=0, timeout=60)
    refused = {r.task_id for r in report.results if r.status == "refused"}
    assert refused and report.score < report.points
    message = next(r.message for r in report.results if r.status == "refused")
    assert says in message and "refused" in message, message


def test_the_engine_tasks_verdict_is_made_in_the_parent_from_the_workers_record(tmp_path):
    """Task 5: the worker runs only the learner's cache and sends what the engine did; a worker
    that claims full marks for a split that forgets the edge's locks is judged on that record
    here, beside minirt's radix cache run in this process."""
    import json

    from minirt.grading import replay, run_task
    from minirt.grading.runner import _verdict
    from tests.labs.common import cells_into_namespace
    from tests.labs.test_runner import Pipe

    task = next(t for t in lab06.TASKS if t.id == "5")
    assert task.play is not None and task.judged_apart
    recording = replay.Recording(task)
    edit = ("child.lock_ref, child.last_access, new_id())", "0, child.last_access, new_id())")
    ns = cells_into_namespace(planted(tmp_path, edit), lambda src: "chat(" in src)
    worker = run_task(task, ns, 0, play=recording.player(ns), judge=False)
    assert worker.status == "passed" and len(recording.cases) == task.num_cases  # nothing judged
    sent = json.loads(json.dumps({"result": worker.to_dict(), "cases": recording.cases}))
    result = _verdict(sent, task, 0, Pipe(), 0)
    assert result.status == "wrong" and result.score < task.points, result.message
    assert "step" in result.message and "yours" in result.message, result.message
