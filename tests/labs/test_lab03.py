"""Lab 3's grader, graded as a student would be: a wrong rule loses the tasks that see it (the
function's own, and the engine's when the engine's run shows it), with partial credit and a
message that names the fault; a notebook that reaches minirt's verifier or rollback, the grader,
or patches what it imported scores 0; the statistical check rejects rules that change the
distribution.

(Full marks for the solution and 0 for the untouched student notebook are in test_grading.py, for
every lab.) Planted bugs run in this process (the cells into one namespace, as the grader's
worker runs them); the cheats go through `grade_notebook`, as a learner's notebook does.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import nbformat
import pytest

from minirt.grading import Mismatch, grade_notebook, lab03
from tests.labs.common import grade_in_process as run_in_process
from tests.labs.common import planted as planted_in
from tests.labs.common import single_thread

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labs" / "source" / "lab03_speculative.ipynb"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    yield from single_thread()


planted = partial(planted_in, SOURCE)  # planted(tmp_path, (old, new), ...)


def grade_in_process(path: Path) -> dict:
    return run_in_process(path, lab03.TASKS)


KEPT = "num_kept = -(-num_tokens_kept // block_size)"
BUGS = {  # a planted bug -> ({task: status}, edits, what the first one's message says)
    "greedy: no bonus token when every guess agrees": (
        {"1": "wrong", "4": "wrong"},
        [
            (
                "return a, draft_tokens[:a] + [choice[a]]",
                "return a, draft_tokens[:a] + [choice[a]] * (a < len(draft_tokens))",
            )
        ],
        ["every guess agrees", "then the bonus token"],
    ),
    "acceptance tested with the next position's p": (
        {"2": "wrong", "4": "wrong"},
        [("if u[j] >= p[j, x] / q[j, x]:", "if u[j] >= p[j + 1, x] / q[j, x]:")],
        ["minirt accepts", "u[j] < p[j][x_j] / q[j][x_j]", "-> reject"],
    ),
    "residual not clamped at 0": (  # in the engine, a negative probability: draw() fails
        {"2": "wrong", "4": "error"},
        [("residual = (p[j] - q[j]).clamp(min=0)", "residual = p[j] - q[j]")],
        ["the residual norm(max(0, p[", "clamp"],
    ),
    "residual not renormalized": (  # the engine's multinomial normalizes: only task 2 sees it
        {"2": "wrong"},
        [("draw(residual / residual.sum())", "draw(residual)")],
        ["the residual norm(max(0, p[", "not 1; normalize it"],
    ),
    "no bonus token when every guess is accepted": (
        {"2": "wrong", "4": "wrong"},
        [("return k, draft_tokens + [draw(p[k])]", "return k, draft_tokens")],
        ["without calling draw", "every guess was accepted", "the bonus, draw(p["],
    ),
    "rollback keeps one block too many": (
        {"3": "wrong", "4": "wrong"},
        [(KEPT, "num_kept = num_tokens_kept // block_size + 1")],
        ["holds only rejected guesses", "(a leak)"],
    ),
    "rollback frees a block that still holds a kept token": (
        {"3": "wrong", "4": "wrong"},
        [(KEPT, "num_kept = num_tokens_kept // block_size")],
        ["you freed block", "which holds tokens the sequence keeps"],
    ),
}


@pytest.mark.parametrize("bug", BUGS)
def test_a_planted_bug_loses_its_tasks_with_partial_credit_and_says_why(bug, tmp_path):
    costs, edits, says = BUGS[bug]
    results = grade_in_process(planted(tmp_path, *edits))
    lost = {t: r.status for t, r in results.items() if r.status != "passed"}
    assert lost == costs, {t: r.message[:300] for t, r in results.items()}
    first = results[min(costs)]
    assert all(fragment in first.message for fragment in says), first.message
    total = sum(r.score for r in results.values())
    assert 0 < total < sum(r.points for r in results.values())  # partial credit


def test_the_engine_task_names_the_step_and_the_rollback_that_differ(tmp_path):
    results = grade_in_process(planted(tmp_path, (KEPT, "num_kept = num_tokens_kept // 2 + 1")))
    message = results["4"].message
    assert results["4"].status == "wrong"
    assert "step" in message and "table before the rollback" in message, message


CHEATS = {  # how a notebook cheats -> (edits, what the refusal names)
    "delegates to minirt's greedy rule": (
        [
            (
                "    choice = target_logits.argmax(-1).tolist()",
                "    from minirt.spec import greedy_verify\n"
                "    choice = target_logits.argmax(-1).tolist()",
            )
        ],
        "`from minirt.spec import greedy_verify`",
    ),
    "rolls back with the block manager's truncate": (
        [
            (
                f"    {KEPT}",
                "    bm = BlockManager(len(block_table), block_size)\n"
                "    bm.truncate(0, num_tokens_kept)\n"
                f"    {KEPT}",
            )
        ],
        "the attribute `.truncate`",
    ),
    "patches the grader": (
        [
            (
                "    choice = target_logits.argmax(-1).tolist()",
                "    from minirt.grading import lab03_engine\n"
                "    choice = target_logits.argmax(-1).tolist()",
            )
        ],
        "reaches the grader",
    ),
    "patches the engine it imported": (
        [
            (
                "    choice = target_logits.argmax(-1).tolist()",
                "    LLM.generate = SamplingParams\n    choice = target_logits.argmax(-1).tolist()",
            )
        ],
        "changes what was imported",
    ),
}


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_cheating_notebook_scores_zero_and_is_told_where(cheat, tmp_path):
    edits, says = CHEATS[cheat]
    report = grade_notebook(planted(tmp_path, *edits), seed=0, timeout=60)
    assert report.score == 0
    assert {r.status for r in report.results} == {"refused"}
    message = report.results[0].message
    assert says in message and "refused" in message, message


def test_the_engines_verifier_handed_back_as_the_learners_is_refused_by_its_object(tmp_path):
    """minirt's verifier taken from a live engine by a computed key: the source check cannot
    see it; the object check finds it behind the notebook's my_verifier."""
    hidden = (
        "_spec = LLM(device='cpu', speculative_model='draft', num_speculative_tokens=2).spec\n"
        "theirs = vars(_spec)['veri' + 'fier']\n\n\n"
        "def my_verifier(drafts, q, p_logits, params, generator=None):\n"
        "    return theirs(drafts, q, p_logits, params, generator)\n"
    )
    nb = nbformat.read(SOURCE, as_version=4)
    cell = next(c for c in nb.cells if "def my_verifier(" in c.source)
    cell.source = hidden
    path = tmp_path / SOURCE.name
    nbformat.write(nb, path)
    report = grade_notebook(path, seed=0, timeout=60)
    by_id = {r.task_id: r for r in report.results}
    assert by_id["4"].status == "refused" and by_id["4"].score == 0
    assert "minirt.spec.rejection" in by_id["4"].message, by_id["4"].message


def _accept_every_guess(draft_tokens, q, p, u, draw):
    return len(draft_tokens), list(draft_tokens) + [draw(p[len(draft_tokens)])]


def _resample_from_p(draft_tokens, q, p, u, draw):
    for j, x in enumerate(draft_tokens):
        if u[j] >= p[j, x] / q[j, x]:
            return j, list(draft_tokens[:j]) + [draw(p[j])]  # p, not the residual
    return len(draft_tokens), list(draft_tokens) + [draw(p[len(draft_tokens)])]


@pytest.mark.parametrize("rule", [_accept_every_guess, _resample_from_p], ids=lambda f: f.__name__)
def test_the_statistical_check_rejects_a_rule_that_changes_the_distribution(rule):
    """Task 2's last case on its own: a wrong rule emits tokens that do not follow p."""
    with pytest.raises(Mismatch, match="should follow the target's"):
        lab03.check_distribution(rule)


def test_the_engine_tasks_verdict_is_made_in_the_parent_from_the_workers_record(tmp_path):
    """Task 4: the worker runs only the learner's engine and sends every verifier call and the
    run; a worker that claims full marks for a rollback that keeps a block too many is judged on
    that record here, beside minirt's speculative engine run in this process."""
    import json

    from minirt.grading import replay, run_task
    from minirt.grading.runner import _verdict
    from tests.labs.common import cells_into_namespace
    from tests.labs.test_runner import Pipe

    task = next(t for t in lab03.TASKS if t.id == "4")
    assert task.play is not None and task.judged_apart
    recording = replay.Recording(task)
    ns = cells_into_namespace(planted(tmp_path, (KEPT, "num_kept = num_tokens_kept // 2 + 1")))
    worker = run_task(task, ns, 0, play=recording.player(ns), judge=False)
    assert worker.status == "passed" and len(recording.cases) == task.num_cases  # nothing judged
    sent = json.loads(json.dumps({"result": worker.to_dict(), "cases": recording.cases}))
    result = _verdict(sent, task, 0, Pipe(), 0)
    assert result.status == "wrong" and result.score < task.points, result.message
    assert "table before the rollback" in result.message, result.message
