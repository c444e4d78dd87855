"""The autograder: full marks for the solutions, 0 (and no crash) for the untouched student
notebooks, and a broken task costs that task only."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from minirt.grading import LABS, grade_notebook, lab02, self_check
from minirt.grading.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
LAB_NAMES = sorted(LABS)
SOURCES = ROOT / "labs" / "source"  # the lab sources: the solutions


def planted(tmp_path, lab, *edits):
    """A copy of the lab's solution notebook with (old, new) source edits, each in one cell."""
    nb = nbformat.read(SOURCES / f"{lab}.ipynb", as_version=4)
    for old, new in edits:
        hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(hits) == 1, f"the solution changed: {old!r} is not in exactly one cell"
        hits[0].source = hits[0].source.replace(old, new)
    path = tmp_path / f"{lab}.ipynb"
    nbformat.write(nb, path)
    return path


def scores(report):
    return {r.task_id: r.score for r in report.results}


def test_every_solution_scores_full_marks_in_one_command_with_a_report(tmp_path, capsys):
    report_path = tmp_path / "class" / "report.json"
    assert main([str(SOURCES), "--report", str(report_path), "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "not implemented" not in out and f"over {len(LAB_NAMES)} labs" in out
    report = json.loads(report_path.read_text())
    assert report["schema"] == 1 and report["seed"] == 5
    assert [lab["lab"] for lab in report["labs"]] == LAB_NAMES
    assert report["score"] == report["points"] == sum(lab["points"] for lab in report["labs"])
    for lab in report["labs"]:
        assert {r["status"] for r in lab["results"]} == {"passed"}, lab["lab"]
        assert all(r["cases_passed"] == r["num_cases"] for r in lab["results"])


@pytest.mark.parametrize("lab", LAB_NAMES)
def test_the_untouched_student_notebook_scores_zero_without_crashing(lab):
    notebook = ROOT / "labs" / f"{lab}.ipynb"  # the student version
    cmd = [sys.executable, "-m", "minirt.grading", str(notebook), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert report["score"] == 0 and report["points"] > 0
    assert {r["status"] for r in report["results"]} == {"not implemented"}
    assert all("hint:" in r["message"] for r in report["results"])


LAB01_BUGS = {  # task id -> a planted bug that only that task's cases can see
    "1a": [("return 2 * num_layers", "return num_layers")],
    "1b": [("    if n < 1:\n", "    if n < 0:\n")],  # 0 blocks instead of ValueError
    "2": [("            self.ref_count[b] += 1\n", "            pass\n")],  # fork shares nothing
    "3": [("range(len(token_ids) // block_size)", "range((len(token_ids) - 1) // block_size)")],
}


LAB01_BUILDS_ON = {"3": "4"}  # task 4's books find their hits with task 3's chain_hashes


@pytest.mark.parametrize("task", LAB01_BUGS)
def test_a_planted_bug_loses_its_own_task_only(task, tmp_path):
    path = planted(tmp_path, "lab01_kv_blocks", *LAB01_BUGS[task])
    report = grade_notebook(path, seed=0)
    wrong = {r.task_id: r.status for r in report.results if r.status != "passed"}
    also = LAB01_BUILDS_ON.get(task)
    assert wrong == {task: "wrong", **({also: "wrong"} if also else {})}
    result = next(r for r in report.results if r.task_id == task)
    assert result.score == round(result.points * result.cases_passed / result.num_cases, 2)
    failed = result.num_cases - result.cases_passed
    assert result.message.startswith(f"{failed} of {result.num_cases} cases fail; the ")


LAB02_BUGS = {  # a planted bug -> (the one task that catches it, edits, what its message says)
    "pinned copy without the ramp": (
        "1a",
        [("ramp = min(nbytes, hw.ramp_bytes)", "ramp = 0")],
        ["pinned=True", "Hardware.copy_ms says"],
    ),
    "pageable copy without the pipeline's fill": (
        "1b",
        [(" + chunk / (fast * 1e6)", "")],
        ["pinned=False", "Hardware.copy_ms says"],
    ),
    "compute stream does not wait for the swap-in": (
        "2",
        [('        if s == need_at:\n            p.wait("kv prefetched", stream=COMPUTE)\n', "")],
        ["races with the copy", "p.wait('kv prefetched', stream='compute')"],
    ),
    "swap-in on the compute stream": (
        "2",
        [
            (
                'p.h2d("prefetch kv", kv_bytes, stream="copy"',
                'p.h2d("prefetch kv", kv_bytes, stream=COMPUTE',
            )
        ],
        ["is on the compute stream", "stream='copy'"],
    ),
    "swap-out does not wait for the last step that wrote the KV": (
        "3",
        [('            p.wait("kv written", stream="copy")\n', "")],
        ["the copy races with the step", "p.wait('kv written', stream='copy')"],
    ),
}


@pytest.mark.parametrize("bug", LAB02_BUGS)
def test_a_planted_lab02_bug_loses_its_own_task_and_says_why(bug, tmp_path):
    task, edits, says = LAB02_BUGS[bug]
    report = grade_notebook(planted(tmp_path, "lab02_swap_prefetch", *edits), seed=0)
    wrong = {r.task_id: r for r in report.results if r.status != "passed"}
    assert {t: r.status for t, r in wrong.items()} == {task: "wrong"}
    assert all(fragment in wrong[task].message for fragment in says), wrong[task].message


def test_lab02_notebook_builds_its_steps_with_the_graders_decode_step():
    nb = nbformat.read(SOURCES / "lab02_swap_prefetch.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert inspect.getsource(lab02.decode_step).strip() in code
    assert f"TOKEN_BYTES = {lab02.TOKEN_BYTES}" in code and f"HOST_MS = {lab02.HOST_MS}" in code


@pytest.mark.gpu
def test_lab02_reference_schedules_read_no_stale_data_on_a_gpu():
    """The grader also runs the learner's programs with run_cuda: a right schedule must pass."""
    from minirt.transfer import run_cuda

    swap_in = lab02.reference_swap_in(8, 6, 16 << 20, 0.4, lab02.Hardware())
    swap_out_in = lab02.reference_swap_out_in(10, 3, 8, 16 << 20, 0.4)
    assert run_cuda(swap_in, reps=2).stale == []
    assert run_cuda(swap_out_in, reps=2).stale == []


LAB05_BUGS = {  # a planted bug -> (the one task that catches it, edits, what its message says)
    "bank computed on bytes, not words": (
        "1",
        [("return address // 4 % 32", "return address % 32")],
        ["it is bank", "the byte address mod 32"],
    ),
    "a broadcast counted as a conflict": (
        "1",
        [
            (
                "words_in_bank.setdefault(bank_of(a), set()).add(a // 4)",
                "words_in_bank.setdefault(bank_of(a), []).append(a // 4)",
            )
        ],
        ["simulate says", "(a broadcast)"],
    ),
    "16-byte loads without phases": (
        "2",
        [
            (
                "threads_per_phase = 128 // access_bytes",
                "threads_per_phase = 32 if access_bytes == 16 else 128 // access_bytes",
            )
        ],
        ["quarter-warps (8 threads)", "You looked at the whole warp at once"],
    ),
    "a swizzle that is not a bijection": (
        "3",
        [("(col ^ (row % 32))", "(col | (row % 32))")],
        ["one overwrites the other", "must be a bijection"],
    ),
    "padding instead of a swizzle": (
        "3",
        [
            (
                "return (row * tile_cols + (col ^ (row % 32))) * 4",
                "return (row * (tile_cols + 1) + col) * 4",
            )
        ],
        ["outside row 1's own 128 bytes", "that is padding", "permute the columns"],
    ),
}


@pytest.mark.parametrize("bug", LAB05_BUGS)
def test_a_planted_lab05_bug_loses_its_own_task_and_says_why(bug, tmp_path):
    task, edits, says = LAB05_BUGS[bug]
    report = grade_notebook(planted(tmp_path, "lab05_bank_conflicts", *edits), seed=0)
    wrong = {r.task_id: r for r in report.results if r.status != "passed"}
    assert {t: r.status for t, r in wrong.items()} == {task: "wrong"}
    assert all(fragment in wrong[task].message for fragment in says), wrong[task].message


def test_a_hanging_task_and_a_broken_cell_cost_only_their_own_tasks(tmp_path):
    path = planted(
        tmp_path,
        "lab01_kv_blocks",
        ("hashes, parent = [], None", "while True:\n        pass"),
        ("class BlockAllocator:", "class BlockAllocator("),  # a SyntaxError in its cell
    )
    report = grade_notebook(path, seed=0, timeout=2)
    assert scores(report) == {"1a": 2, "1b": 2, "2": 0, "3": 0, "4": 0}
    by_id = {r.task_id: r for r in report.results}
    assert by_id["2"].status == "missing" and "SyntaxError" in by_id["2"].message
    assert by_id["3"].status == "timeout"


def test_a_notebook_that_is_not_a_lab_is_refused_with_exit_code_2(tmp_path, capsys):
    other = tmp_path / "notes.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), other)
    assert main([str(other)]) == 2
    assert "not named after a lab" in capsys.readouterr().err


def test_self_check_shows_the_failing_case_and_how_to_replay_it(capsys):
    def chain_hashes(token_ids, block_size):
        return [hash(tuple(token_ids[i : i + block_size])) for i in range(0, len(token_ids), 4)]

    self_check("lab01_kv_blocks", "3", {"chain_hashes": chain_hashes}, seed=7)
    out = capsys.readouterr().out
    assert out.startswith("✗ task 3 chain_hashes (0.17/2): wrong — 55 of 60 cases fail; the ")
    assert "smallest, case 2: chain_hashes([10505], block_size=2)" in out  # 1 token, 1 hash
    assert "seed=7" in out
