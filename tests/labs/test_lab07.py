"""Lab 7's grader, graded as a student would be: a wrong policy or a wrong scheduler step loses the
tasks that see it, with partial credit and a message that names the first differing call or step;
a notebook that reaches minirt's policies or scheduler, patches the grader or hands back the
reference's order scores 0.

(Full marks for the solution and 0 for the untouched student notebook are in test_grading.py, for
every lab.) Planted bugs run in this process (the cells into one namespace, as the grader's
worker runs them); the cheats go through `grade_notebook`, as a learner's notebook does.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import nbformat
import pytest

from minirt.grading import grade_notebook, lab07
from tests.labs.common import grade_in_process as run_in_process
from tests.labs.common import planted as planted_in
from tests.labs.common import single_thread

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labs" / "source" / "lab07_scheduling.ipynb"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    yield from single_thread()


planted = partial(planted_in, SOURCE)  # planted(tmp_path, (old, new), ...)


def grade_in_process(path: Path, tasks: str = "1234", **kw) -> dict:
    """The results of `tasks` (their ids), played in this process."""
    return run_in_process(path, lab07.TASKS, keep=lambda t: t.id in tasks, **kw)


def demo(source: str) -> bool:
    """The policy demo's engine run, which the scheduler's tasks do not need."""
    return source.startswith("calls = []")


LPM = "return sorted(waiting, key=lambda s: -cache.match_len(s.token_ids))"
BUGS = {  # a planted bug -> (the tasks it costs, edits, what the first one's message says)
    "the shortest cached prefix first": (
        {"1", "3", "4"},  # AgingLPM orders its young requests with task 1
        [(LPM, "return sorted(waiting, key=lambda s: cache.match_len(s.token_ids))")],
        ["position", "has a longer cached prefix", "minirt's order"],
    ),
    "ties broken newest first": (
        {"1", "3", "4"},
        [(LPM, "return sorted(waiting[::-1], key=lambda s: -cache.match_len(s.token_ids))")],
        ["cached tokens, and r", "equal matches keep their order"],
    ),
    "the lightest subtree first": (
        {"2", "4"},
        [
            (
                "key=lambda n: weight[n])",
                "key=lambda n: -weight[n])",
            )
        ],
        ["minirt's dfs_weight puts", "heaviest first"],
    ),
    "a node's own requests after its children's": (
        {"2", "4"},
        [
            (
                "        order += own.get(node, [])\n",
                "        order[:0] = own.get(node, [])\n",
            )
        ],
        ["minirt's dfs_weight puts", "its own requests in `waiting` order"],
    ),
    "aging never ages": (
        {"3", "4"},
        [("self.age[s.seq_id] = self.age.get(s.seq_id, 0) + 1", "self.age[s.seq_id] = 1")],
        ["Waiting longer than", "they go first, in `waiting` order"],
    ),
    "the old requests by longest prefix too": (
        {"3", "4"},
        [
            (
                "return old + longest_prefix_first(young, cache)",
                "return longest_prefix_first(old, cache) + longest_prefix_first(young, cache)",
            )
        ],
        ["Waiting longer than", "the reference's is"],
    ),
}


@pytest.mark.parametrize("bug", BUGS)
def test_a_planted_bug_loses_its_tasks_with_partial_credit_and_says_why(bug, tmp_path):
    costs, edits, says = BUGS[bug]
    results = grade_in_process(planted(tmp_path, *edits))
    lost = {t for t, r in results.items() if r.status != "passed"}
    assert lost == costs, {t: r.message[:200] for t, r in results.items()}
    assert {results[t].status for t in costs} == {"wrong"}
    first = results[min(costs)]
    assert all(fragment in first.message for fragment in says), first.message
    assert "cases fail; the smallest, case" in first.message
    total = sum(r.score for r in results.values())
    assert 0 < total < sum(r.points for r in results.values())  # partial credit


def test_the_engine_task_names_the_step_whose_order_differs(tmp_path):
    edits = [("self.age[s.seq_id] = self.age.get(s.seq_id, 0) + 1", "self.age[s.seq_id] = 1")]
    result = grade_in_process(planted(tmp_path, *edits))["4"]
    assert result.status == "wrong"
    assert "starving workload" in result.message and "step " in result.message, result.message


SCHEDULER_BUGS = {  # a planted bug in the scheduler's step -> (tasks it costs, edits, message)
    "a chunk one token over the budget": (
        {"5", "6", "7"},
        [("n = min(n, budget)  # a chunk", "n = min(n, budget + 1)  # a chunk")],
        ["step ", "scheduled (sequence, new tokens): yours", "a chunk is what is left"],
    ),
    "an admitted prompt not capped by the budget": (
        {"5", "6", "7"},
        [("n = min(seq.num_tokens - cached, budget)", "n = seq.num_tokens - cached")],
        ["step 0: the engine scheduled (sequence, new tokens): yours"],
    ),
    "the sequence that needs a block preempts itself": (
        {"6"},
        [("victim = self.running.pop()", "victim = seq\n            self.running.remove(seq)")],
        ["step ", "preempted sequences: yours [", "the newest running sequence gives up its own"],
    ),
    "a preempted request waits at the back of the queue": (
        {"6"},
        [("self.waiting.appendleft(seq)", "self.waiting.append(seq)")],
        ["step ", "a preempted one first in line"],
    ),
    "nobody is ever admitted": (
        {"5", "6", "7"},
        [("if batch.preempted:", "if True:")],
        ["step 0: your scheduler scheduled nothing while requests were still unfinished"],
    ),
    "decodes run in a prefill-first step": (
        {"7"},
        [("prefills_only=True)", "prefills_only=False)")],
        ["prefill-first: step ", "scheduled (sequence, new tokens)", "runs no decode"],
    ),
}


@pytest.mark.parametrize("bug", SCHEDULER_BUGS)
def test_a_planted_scheduler_bug_loses_its_tasks_naming_the_step_and_what_differs(bug, tmp_path):
    costs, edits, says = SCHEDULER_BUGS[bug]
    results = grade_in_process(planted(tmp_path, *edits), tasks="567", skip=demo)
    lost = {t for t, r in results.items() if r.status != "passed"}
    assert lost == costs, {t: r.message[:300] for t, r in results.items()}
    assert {results[t].status for t in costs} == {"wrong"}
    first = results[min(costs)]
    assert all(fragment in first.message for fragment in says), first.message
    assert sum(r.score for r in results.values()) < sum(r.points for r in results.values())


# minirt's Scheduler reached through a live engine, which the source check cannot see: what
# these test is the object check of the scheduler the engine built from the learner's class
MINIRTS = "_minirts = type(LLM(device='cpu', num_kv_blocks=8).scheduler)\n\n\n"
DERIVED = MINIRTS + "class MyScheduler(_minirts):"
WRAPPER = (
    MINIRTS + "class MyScheduler(PreemptingScheduler):\n"
    "    def __init__(self, *args):\n"
    "        super().__init__(*args)\n"
    "        self.theirs = _minirts(*args)\n"
)


@pytest.mark.parametrize("cheat", ["derives from it", "holds one"])
def test_a_scheduler_built_on_minirts_own_is_refused_by_its_object(cheat, tmp_path):
    old = "class MyScheduler(PreemptingScheduler):\n"
    new = DERIVED + "\n" if cheat == "derives from it" else WRAPPER
    results = grade_in_process(planted(tmp_path, (old, new)), tasks="7", skip=demo)
    assert results["7"].status == "refused" and results["7"].score == 0, results["7"].message
    assert "minirt.sched.scheduler.Scheduler" in results["7"].message, results["7"].message


CHEATS = {  # how a notebook cheats -> (edits, what the refusal names)
    "delegates to minirt's lpm": (
        [(LPM, "from minirt.sched.policy import lpm\n    return lpm(waiting, cache)")],
        "`from minirt.sched.policy import lpm`",
    ),
    "patches the grader's engine check": (
        [
            (
                "calls = []\n",
                "import minirt.grading.lab07 as grader\n\n"
                "grader.expect_policies = print\ncalls = []\n",
            )
        ],
        "`import minirt.grading.lab07`",
    ),
    "patches the scheduler so both runs agree": (
        [
            (
                "calls = []\n",
                "from minirt.sched import scheduler\n\n"
                "scheduler.Scheduler._admit = print\ncalls = []\n",
            )
        ],
        "changes what was imported",
    ),
    "derives its scheduler from minirt's": (
        [
            (
                "class MyScheduler(PreemptingScheduler):",
                "from minirt.sched import Scheduler\n\n\nclass MyScheduler(Scheduler):",
            )
        ],
        "the name `Scheduler`",
    ),
    "hands back the engine's own order": (
        [
            (
                LPM,
                "theirs = LLM(schedule_policy='l' + 'pm').scheduler.policy\n"
                "    return theirs(waiting, cache)",
            )
        ],
        "the attribute `.policy`",
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


def test_a_reference_reached_where_the_source_cannot_show_it_is_refused_by_its_object(tmp_path):
    """The order taken from a live engine through a computed attribute name: the source check
    cannot see the policy, the object check finds minirt's function behind the learner's name."""
    hidden = (
        "_engine = LLM(schedule_policy='l' + 'pm').scheduler\n"
        "theirs = vars(_engine)['pol' + 'icy']\n\n\n"
        "def longest_prefix_first(waiting: list, cache) -> list:\n"
        "    return theirs(waiting, cache)\n"
    )
    nb = nbformat.read(SOURCE, as_version=4)
    cell = next(c for c in nb.cells if "def longest_prefix_first" in c.source)
    cell.source = hidden
    path = tmp_path / SOURCE.name
    nbformat.write(nb, path)
    report = grade_notebook(path, seed=0, timeout=60)
    by_id = {r.task_id: r for r in report.results}
    assert by_id["1"].status == "refused" and by_id["1"].score == 0
    assert "minirt.sched.policy" in by_id["1"].message, by_id["1"].message
