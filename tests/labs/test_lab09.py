"""Lab 9's grader, graded as a student would be: a wrong exchange loses exactly the cases that can
see it, with partial credit and a message that names the fault; a notebook that calls minirt's
exchange scores 0; the solution's exchange runs minirt's expert-parallel block on 2 gloo ranks.

(Full marks for the solution and 0 for the untouched student notebook are in test_grading.py, for
every lab.) Planted bugs run in this process (the cells into one namespace, as the grader's
worker runs them, the ranks forked from here); the cheats go through `grade_notebook`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import nbformat
import pytest
import torch

from minirt.grading import grade_notebook, lab09
from minirt.grading.core import task_seed
from minirt.moe import MoEBlock
from minirt.moe.launch import run_ranks
from minirt.moe.parallel import Exchange, ExpertParallelMoE
from tests.labs.common import cells_into_namespace, single_thread
from tests.labs.common import grade_in_process as run_in_process
from tests.labs.common import planted as planted_in

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labs" / "source" / "lab09_moe_dispatch.ipynb"
SEED = 0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    yield from single_thread()


planted = partial(planted_in, SOURCE)  # planted(tmp_path, (old, new), ...)


def grade_in_process(path: Path) -> dict:
    return run_in_process(path, lab09.TASKS, seed=SEED)


def drawn(task_id: str, draw) -> list:
    """The cases the grader draws for a task at SEED (as `run_task` gives them their rng)."""
    task = next(t for t in lab09.TASKS if t.id == task_id)
    rng = task_seed(SEED, task_id)
    return [draw(rng, i) for i in range(task.num_cases)]


def plans_missing_a_last_expert() -> int:
    """Task 1's cases whose last expert gets no row (a count table cut short there)."""
    cases = drawn("1", lab09.draw_plan)
    return sum(experts.numel() == 0 or int(experts.max()) < e - 1 for experts, e, _ in cases)


def exchanges_with(predicate) -> int:
    return sum(map(predicate, drawn("3", lab09.draw_exchange)))


def blocks_with(predicate) -> int:
    return sum(map(predicate, drawn("4", lab09.draw_block)))


def top_k_above_1(case: dict) -> bool:
    return case["k"] > 1


def lopsided(case: dict) -> bool:
    """Rank 0 sends rank 1 another number of rows than rank 1 sends rank 0."""
    a, b = (d["counts"].sum(1).tolist() for d in case["ranks"])
    return a[1] != b[0]


COUNT = "counts = torch.bincount(flat, minlength=num_experts)  # [E]"
ROWS = "dist.all_to_all_single(recv_x, rows, recv, send, group=group)"
WEIGH = "rows = back * weights.reshape(-1)[order, None].to(back.dtype)"
ADD = "index_add_(0, order // k, rows)"
BUGS = {  # a planted bug -> (edits, {task: cases it must lose, or None: some}, message fragments)
    "counts stop at the last expert that has a row": (
        [(COUNT, "counts = torch.bincount(flat)")],
        {"1": plans_missing_a_last_expert, "4": None},
        ["is invalid for input of size", "cell"],
    ),
    "splits swapped in the rows' all_to_all": (
        [(ROWS, "dist.all_to_all_single(recv_x, rows, send, recv, group=group)")],
        {"2": lambda: sum(map(lopsided, drawn("2", lab09.draw_exchange))), "4": None},
        ["Split sizes", "the input splits are the rows this rank sends"],
    ),
    "combine forgets the router's weights": (
        [(WEIGH, "rows = back")],
        # with one expert per token its weight is 1: forgetting it changes nothing
        {"3": lambda: exchanges_with(top_k_above_1), "4": lambda: blocks_with(top_k_above_1)},
        ["output differs", "the router weights are missing"],
    ),
    "combine adds the rows in the order they came back": (
        [
            (
                ADD,
                "index_add_(0, torch.arange(len(order)) // k, back * weights.reshape(-1)[:, None])",
            )
        ],
        {"3": None, "4": None},
        ["the rows come back in the order they were sent", "not in token order"],
    ),
}


@pytest.mark.parametrize("bug", BUGS)
def test_a_planted_bug_loses_the_cases_that_see_it_and_says_why(bug, tmp_path):
    edits, costs, says = BUGS[bug]
    results = grade_in_process(planted(tmp_path, *edits))
    lost = {t for t, r in results.items() if r.status != "passed"}
    assert lost == set(costs), {t: r.message[:300] for t, r in results.items()}
    for task, expected in costs.items():
        r = results[task]
        failed = r.num_cases - r.cases_passed
        assert failed == expected() if expected else 0 < failed, (task, failed, r.message[:300])
        assert r.message.startswith(f"{failed} of {r.num_cases} cases fail; the "), r.message
    first = results[min(costs)]
    assert all(fragment in first.message for fragment in says), first.message
    assert 0 < sum(r.score for r in results.values()) < sum(r.points for r in results.values())


def test_a_rank_that_skips_a_collective_costs_its_case_not_the_task(tmp_path):
    """The ranks fall out of step (one waits, one aborts): that case fails, the grader starts
    fresh ranks for the next ones, and the task neither hangs nor loses the other cases."""
    start = "    recv_counts = torch.empty_like(counts)\n"
    skip = "    if x.shape[0] == 0:  # nothing to send, nothing to say\n        return x, counts\n"
    edits = [(start, skip + start)]
    result = grade_in_process(planted(tmp_path, *edits))["2"]
    assert result.status != "passed" and result.cases_passed >= result.num_cases - 2, result
    assert "rank" in result.message and "case 1:" in result.message, result.message


CHEATS = {  # how a notebook cheats -> (edits, what the refusal names)
    "calls minirt's dispatch": (
        [
            (
                "    recv_counts = torch.empty_like(counts)\n",
                "    from minirt.moe.parallel import all_to_all_dispatch\n\n"
                "    return all_to_all_dispatch(x, order, top_k, counts, group)\n"
                "    recv_counts = torch.empty_like(counts)\n",
            )
        ],
        "`from minirt.moe.parallel import all_to_all_dispatch`",
    ),
    "runs the block's own stage": (
        [(WEIGH, "return ExpertParallelMoE(MoEBlock(8, 4, 2, 1))._finish(dict(back=back))")],
        "the attribute `._finish`",
    ),
    "sorts with minirt's helper": (
        [("order = torch.argsort(flat, stable=True)", "order = M.sort_by_expert(flat, 4)[0]")],
        "the attribute `.sort_by_expert`",
    ),
}


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_notebook_that_calls_minirts_exchange_scores_zero_and_is_told_where(cheat, tmp_path):
    edits, says = CHEATS[cheat]
    report = grade_notebook(planted(tmp_path, *edits), seed=SEED, timeout=60)
    assert report.score == 0
    assert {r.status for r in report.results} == {"refused"}
    message = report.results[0].message
    assert says in message and "refused" in message, message


def _solution_rank(rank, world_size, solution, block, x, shares):
    exchange = Exchange(solution["plan_dispatch"], solution["dispatch"], solution["combine"])
    start = sum(shares[:rank])
    y, stats = ExpertParallelMoE(block, exchange=exchange).forward(x[start : start + shares[rank]])
    return {"y": y, "recv_rows": stats.recv_rows}


def test_the_solution_runs_the_expert_parallel_block_and_equals_one_process():
    """The notebook's own exchange in minirt's block on 2 gloo ranks, with a router that never
    picks rank 1's experts and uneven shares of the batch: the one-process block's output."""
    solution = cells_into_namespace(SOURCE)
    torch.manual_seed(3)
    block = MoEBlock(16, 8, 4, 2, shared_intermediate=8)
    with torch.no_grad():
        block.gate.weight.abs_()
        block.gate.weight[2:] = 0  # experts 2 and 3 (rank 1's) never win
        x = torch.randn(9, 16).abs()
        want = block(x)
    ranks = run_ranks(_solution_rank, 2, (solution, block, x, [2, 7]))
    assert [sum(r["recv_rows"]) for r in ranks] == [18, 0]
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), want, rtol=1e-5, atol=1e-5)


def test_minirts_dispatch_reached_where_the_source_cannot_show_it_is_refused_by_its_object(
    tmp_path,
):
    """minirt's function taken through `vars` and strings built at run time: the source check
    sees no forbidden name, the object check finds minirt's function behind the learner's."""
    hidden = (
        "import minirt.moe as m\n\n"
        "_theirs = vars(vars(m)['par' + 'allel'])['all_to_all_' + 'dispatch']\n\n\n"
        "def dispatch(x, order, top_k, counts, group=None):\n"
        "    return _theirs(x, order, top_k, counts, group)\n"
    )
    nb = nbformat.read(SOURCE, as_version=4)
    cell = next(c for c in nb.cells if c.source.startswith("def dispatch"))
    cell.source = hidden
    path = tmp_path / SOURCE.name
    nbformat.write(nb, path)
    report = grade_notebook(path, seed=SEED, timeout=60)
    by_id = {r.task_id: r for r in report.results}
    assert {by_id["2"].status, by_id["4"].status} == {"refused"}, by_id
    assert by_id["2"].score == by_id["4"].score == 0
    assert "minirt.moe.parallel" in by_id["2"].message, by_id["2"].message
    assert by_id["1"].status == by_id["3"].status == "passed"


def test_the_exchanges_verdict_is_made_in_the_parent_from_the_workers_record(tmp_path):
    """Task 3: the worker runs only the learner's combine on the ranks and sends every rank's
    tokens; a worker that claims full marks for a combine that forgets the router's weights is
    judged on that record here, beside minirt's weighted sum computed in this process."""
    import json

    from minirt.grading import replay, run_task
    from minirt.grading.runner import _verdict
    from tests.labs.test_runner import Pipe

    task = next(t for t in lab09.TASKS if t.id == "3")
    assert task.play is not None and task.judged_apart
    recording = replay.Recording(task)
    ns = cells_into_namespace(planted(tmp_path, (WEIGH, "rows = back")))
    worker = run_task(task, ns, SEED, play=recording.player(ns), judge=False)
    assert worker.status == "passed" and len(recording.cases) == task.num_cases  # nothing judged
    sent = json.loads(json.dumps({"result": worker.to_dict(), "cases": recording.cases}))
    result = _verdict(sent, task, SEED, Pipe(), 0)
    assert result.status == "wrong" and result.score < task.points, result.message
    assert result.num_cases - result.cases_passed == exchanges_with(top_k_above_1)
    assert "the router weights are missing" in result.message, result.message
