"""The autograder: full marks for the solutions, 0 (and no crash) for the untouched student
notebooks, and a broken task costs that task only."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from minirt.grading import LABS, grade_notebook, self_check
from minirt.grading.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
LAB_NAMES = sorted(LABS)


def planted(tmp_path, lab, *edits):
    """A copy of the lab's solution notebook with (old, new) source edits, each in one cell."""
    nb = nbformat.read(ROOT / "labs" / f"{lab}.ipynb", as_version=4)
    for old, new in edits:
        hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(hits) == 1, f"the solution changed: {old!r} is not in exactly one cell"
        hits[0].source = hits[0].source.replace(old, new)
    path = tmp_path / f"{lab}.ipynb"
    nbformat.write(nb, path)
    return path


def scores(report):
    return {r.task_id: r.score for r in report.results}


@pytest.mark.parametrize("lab", LAB_NAMES)
def test_the_solution_scores_full_marks(lab, capsys):
    assert main([str(ROOT / "labs" / f"{lab}.ipynb")]) == 0
    out = capsys.readouterr().out
    assert "passed" in out and "not implemented" not in out


@pytest.mark.parametrize("lab", LAB_NAMES)
def test_the_untouched_student_notebook_scores_zero_without_crashing(lab):
    notebook = ROOT / "labs" / "student" / f"{lab}.ipynb"
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


@pytest.mark.parametrize("task", LAB01_BUGS)
def test_a_planted_bug_loses_its_own_task_only(task, tmp_path):
    path = planted(tmp_path, "lab01_kv_blocks", *LAB01_BUGS[task])
    report = grade_notebook(path, seed=0)
    wrong = {r.task_id: r.status for r in report.results if r.score == 0}
    assert wrong == {task: "wrong"}


def test_a_hanging_task_and_a_broken_cell_cost_only_their_own_tasks(tmp_path):
    path = planted(
        tmp_path,
        "lab01_kv_blocks",
        ("hashes, parent = [], None", "while True:\n        pass"),
        ("class BlockAllocator:", "class BlockAllocator("),  # a SyntaxError in its cell
    )
    report = grade_notebook(path, seed=0, timeout=2)
    assert scores(report) == {"1a": 2, "1b": 2, "2": 0, "3": 0}
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
    assert out.startswith("✗ task 3 chain_hashes: wrong — case ")
    assert "seed=7" in out
