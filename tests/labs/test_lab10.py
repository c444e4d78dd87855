"""Lab 10's grader, graded as a student would be: a wrong reading of the trace loses exactly the
cases that can see it, with partial credit and a message that names the fault; a notebook that
calls minirt's summaries or reads the variant's planted truth scores 0; the variants are fresh per
seed, replay from the same seed, and plant what their truth says.

(Full marks for the solution and 0 for the untouched student notebook are in test_grading.py, for
every lab.) Planted bugs run in this process (the cells into one namespace, as the grader's
worker runs them); the cheats go through `grade_notebook`, as a learner's notebook does.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import nbformat
import pytest

from minirt.grading import grade_notebook, lab10
from minirt.grading.core import task_seed
from minirt.tools.trace_variants import variant
from tests.labs.common import grade_in_process as run_in_process
from tests.labs.common import planted as planted_in

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labs" / "source" / "lab10_profiling.ipynb"
SEED = 0

planted = partial(planted_in, SOURCE)  # planted(tmp_path, (old, new), ...)


def grade_in_process(path: Path) -> dict:
    return run_in_process(path, lab10.TASKS, seed=SEED)


def drawn(task_id: str, draw) -> list:
    """The variants the grader draws for a task at SEED (as `run_task` gives them their rng)."""
    task = next(t for t in lab10.TASKS if t.id == task_id)
    rng = task_seed(SEED, task_id)
    return [draw(rng, i) for i in range(task.num_cases)]


def longest_is_not_the_outlier(trace: list[dict]) -> bool:
    return max(lab10.gpu_events(trace), key=lambda r: r["dur_us"]) is not lab10.outlier(trace)[0]


def hot_spot_cases_with_another_longest() -> int:
    return sum(longest_is_not_the_outlier(v.rows) for v in drawn("3", lab10.draw))


def advice_cases(kinds: set[tuple[str, str]], predicate=lambda trace: True) -> int:
    """Task 4's cases of these (mode, plant) kinds for which `predicate` holds."""
    return sum(
        (v.truth.mode, v.truth.plant) in kinds and predicate(v.rows)
        for v in drawn("4", lab10.draw_advice)
    )


BUSY = 'busy += max(0.0, stop - max(r["start_us"], end))'
KERNELS = '"kernels": len(events)'
IDLE = '    idle = extent - gpu_lane(trace)["busy_us"]\n'
BEST = (
    '    best = max((r for r in events if r["name"] in medians),\n'
    '               key=lambda r: r["dur_us"] / medians[r["name"]])\n'
    '    return best, best["dur_us"] / medians[best["name"]]\n'
)
GRAPHS_RULE = (
    '    if host_cost(trace)["mean_gap_us"] > lane["busy_us"] / lane["kernels"]:\n'
    '        return "graphs"\n'
)
TUNE_RULE = (
    "    event, ratio = slowest_sibling(trace)\n"
    '    if event["dur_us"] * (1 - 1 / ratio) > 0.03 * lane["busy_us"]:\n'
    '        return "tune"\n'
)
BUGS = {  # a planted bug -> (edits, {task: cases it must lose}, message fragments)
    "busy time sums overlapping kernels twice": (
        [(BUSY, 'busy += r["dur_us"]')],
        {"1": lambda: 12, "2": lambda: 8},  # task 2's gaps rest on the busy time
        ["busy time", "the sum of the durations", "counts overlapping kernels twice"],
    ),
    "runtime calls counted as kernels": (
        [(KERNELS, '"kernels": sum(r["lane"] == "CPU → CUDA runtime" for r in trace)')],
        {"1": lambda: 12, "2": lambda: 8},  # the speedup counts the gaps from the kernels
        ["is the number of runtime calls", "count the GPU lane's events"],
    ),
    "gaps of overlapping kernels counted as negative": (
        [
            (
                IDLE,
                '    idle = sum(b["start_us"] - a["start_us"] - a["dur_us"]\n'
                "               for a, b in zip(events, events[1:]))\n",
            )
        ],
        {"2": lambda: 8},
        ["mean_gap_us", "leaves no gap, not a negative one"],
    ),
    "the longest kernel instead of the slowest sibling": (
        [
            (
                BEST,
                '    best = max(events, key=lambda r: r["dur_us"])\n'
                '    return best, best["dur_us"] / median(durations[best["name"]])\n',
            )
        ],
        {
            "3": hot_spot_cases_with_another_longest,
            "4": lambda: advice_cases({("graphs", "slow")}, longest_is_not_the_outlier),
        },
        ["that is the longest kernel, but it has 0 siblings", "median of its name"],
    ),
    "the slow kernel tuned before the launches are fixed": (
        [(GRAPHS_RULE + TUNE_RULE, TUNE_RULE + GRAPHS_RULE)],
        {"4": lambda: advice_cases({("eager", "slow")})},
        ["returned 'tune'; expected 'graphs'", "mean gap"],
    ),
}


@pytest.mark.parametrize("bug", BUGS)
def test_a_planted_bug_loses_exactly_the_cases_that_see_it_and_says_why(bug, tmp_path):
    edits, costs, says = BUGS[bug]
    results = grade_in_process(planted(tmp_path, *edits))
    lost = {t for t, r in results.items() if r.status != "passed"}
    assert lost == set(costs), {t: r.message[:300] for t, r in results.items()}
    for task, expected in costs.items():
        r = results[task]
        failed = r.num_cases - r.cases_passed
        assert r.status == "wrong" and failed == expected() > 0, (task, failed, r.message[:300])
        assert r.message.startswith(f"{failed} of {r.num_cases} cases fail; the "), r.message
    first = results[min(costs)]
    assert all(fragment in first.message for fragment in says), first.message
    assert 0 < sum(r.score for r in results.values()) < sum(r.points for r in results.values())


CHEATS = {  # how a notebook cheats -> (edits, what the refusal names)
    "takes the busy time from minirt's summary": (
        [
            (
                '    events = sorted((r for r in trace if r["lane"] == "GPU kernel"), '
                'key=lambda r: r["start_us"])\n    busy, end',
                "    from minirt.tools.step_timeline import timeline_summary\n\n"
                '    events = sorted((r for r in trace if r["lane"] == "GPU kernel"), '
                'key=lambda r: r["start_us"])\n    busy, end',
            )
        ],
        "`from minirt.tools.step_timeline import timeline_summary`",
    ),
    "reads the planted truth": (
        [
            (
                "    lane = gpu_lane(trace)\n    if host",
                "    return variant(MY_SEED).truth.advice\n    lane = gpu_lane(trace)\n    if host",
            )
        ],
        "the attribute `.truth`",
    ),
}


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_notebook_that_uses_minirts_summaries_scores_zero_and_is_told_where(cheat, tmp_path):
    edits, says = CHEATS[cheat]
    report = grade_notebook(planted(tmp_path, *edits), seed=SEED, timeout=60)
    assert report.score == 0
    assert {r.status for r in report.results} == {"refused"}
    message = report.results[0].message
    assert says in message and "refused" in message, message


def test_minirts_summary_reached_where_the_source_cannot_show_it_is_refused_by_its_object(
    tmp_path,
):
    """The summary taken through `vars` and a name built at run time: the source check sees no
    forbidden name, the object check finds minirt's function behind the learner's."""
    hidden = (
        "import minirt.tools.step_timeline as st\n\n"
        "_theirs = vars(st)['timeline_' + 'summary']\n\n\n"
        "def gpu_lane(trace):\n"
        "    row = next(r for r in _theirs(trace) if r['lane'] == 'GPU kernel')\n"
        "    return {'kernels': row['events'], 'busy_us': row['busy_us'], "
        "'share': row['busy share']}\n"
    )
    nb = nbformat.read(SOURCE, as_version=4)
    cell = next(c for c in nb.cells if c.source.startswith("def gpu_lane"))
    cell.source = hidden
    path = tmp_path / SOURCE.name
    nbformat.write(nb, path)
    report = grade_notebook(path, seed=SEED, timeout=60)
    by_id = {r.task_id: r for r in report.results}
    assert by_id["1"].status == "refused" and by_id["1"].score == 0, by_id["1"]
    assert "minirt.tools.step_timeline" in by_id["1"].message, by_id["1"].message
    assert by_id["3"].status == "passed"


def test_variants_differ_between_seeds_and_the_same_seed_replays():
    a, b, again = (
        variant(1, "graphs", "slow"),
        variant(2, "graphs", "slow"),
        variant(1, "graphs", "slow"),
    )
    assert a.rows == again.rows and a.truth == again.truth
    assert a.rows != b.rows and a.truth != b.truth
    first = [lab10.draw(task_seed(SEED, "1"), i).rows for i in range(3)]
    other = [lab10.draw(task_seed(SEED + 1, "1"), i).rows for i in range(3)]
    assert first == [lab10.draw(task_seed(SEED, "1"), i).rows for i in range(3)]
    assert first[2] != other[2]


@pytest.mark.parametrize("seed", range(6))
def test_each_variant_plants_what_its_truth_says_and_the_rules_agree(seed):
    for mode, plant in [("eager", "none"), ("eager", "slow"), ("graphs", "small")]:
        v = variant(seed, mode, plant)
        assert lab10.advice(v.rows) == v.truth.advice
    for plant in ("none", "slow", "unfused"):
        v = variant(seed, "graphs", plant)
        assert lab10.advice(v.rows) == v.truth.advice
        if plant == "slow":
            assert lab10.outlier(v.rows)[0]["name"] == v.truth.kernel


def test_a_slow_kernel_lengthens_a_graphed_step_but_hides_in_an_eager_one():
    """Replayed from a graph, the planted kernel delays every kernel queued behind it and the
    host's wait for the sampled token; eagerly, the GPU was waiting for launches anyway."""
    for seed in range(3):
        slow, base = variant(seed, "graphs", "slow"), variant(seed, "graphs", "none")
        excess = lab10.busy_us(lab10.gpu_events(slow.rows)) - lab10.busy_us(
            lab10.gpu_events(base.rows)
        )
        grew = lab10.span_us(slow.rows) - lab10.span_us(base.rows)
        assert excess > 80 and abs(grew - excess) < 0.2 * excess, (seed, grew, excess)
        eager_slow, eager = variant(seed, "eager", "slow"), variant(seed, "eager", "none")
        assert abs(
            lab10.span_us(eager_slow.rows) - lab10.span_us(eager.rows)
        ) < 0.01 * lab10.span_us(eager.rows)
