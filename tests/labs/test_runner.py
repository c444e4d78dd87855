"""The grader's worker processes: nothing a notebook starts outlives its task, the notebook runs
in a scratch folder and its output stays out of the score table, and the parent believes only a
result that fits the task, with the score it computes itself."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest

from minirt.grading import grade_notebook, lab01, replay, run_task
from minirt.grading.core import TaskResult
from minirt.grading.runner import _believed, _verdict

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labs" / "source" / "lab01_kv_blocks.ipynb"
ANCHOR = "    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes"


def with_cell_code(tmp_path: Path, code: str) -> Path:
    """Lab 1's solution with `code` run at the top of task 1a's cell (a learner's cell)."""
    nb = nbformat.read(SOURCE, as_version=4)
    cell = next(c for c in nb.cells if ANCHOR in c.source)
    cell.source = code + "\n\n" + cell.source
    path = tmp_path / "lab01_kv_blocks.ipynb"
    nbformat.write(nb, path)
    return path


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan nobody has reaped yet is dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_process_the_notebook_started_dies_with_its_task(tmp_path):
    pids = tmp_path / "pids"
    code = (
        "import subprocess\n"
        "_sleeper = subprocess.Popen(['sleep', '300'])\n"
        f"with open({str(pids)!r}, 'a') as f:\n"
        "    f.write(f'{_sleeper.pid}\\n')"
    )
    report = grade_notebook(with_cell_code(tmp_path, code), seed=0)
    assert report.full_marks, report.table()
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == len(lab01.TASKS)  # one per task's worker
    deadline = time.monotonic() + 5  # SIGKILL is delivered, not waited for
    while [pid for pid in started if running(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in started if running(pid)]


def test_the_notebook_runs_in_a_scratch_folder_that_is_removed(tmp_path):
    where = tmp_path / "cwd"
    code = (
        "import os\n"
        "with open('written-by-the-notebook.txt', 'w') as f:\n"
        "    f.write('x')\n"
        f"with open({str(where)!r}, 'a') as f:\n"
        "    f.write(os.getcwd() + '\\n')"
    )
    report = grade_notebook(with_cell_code(tmp_path, code), seed=0)
    assert report.full_marks, report.table()
    folders = where.read_text().split()
    assert len(set(folders)) == len(lab01.TASKS)  # a folder per task
    for folder in folders:
        assert Path(folder).resolve() not in (ROOT, tmp_path, Path.cwd().resolve())
        assert not Path(folder).exists()
    assert not (ROOT / "written-by-the-notebook.txt").exists()
    assert not (tmp_path / "written-by-the-notebook.txt").exists()


def test_output_at_the_file_descriptor_level_stays_out_of_the_score_table(tmp_path, capfd):
    code = "import os\nos.write(1, b'task 1a: 10/10 FORGED\\n')\nos.write(2, b'FORGED too\\n')"
    report = grade_notebook(with_cell_code(tmp_path, code), seed=0)
    assert report.full_marks
    out, err = capfd.readouterr()
    assert "FORGED" not in out + err


class Pipe:
    """What the parent reads: `more` answers still waiting after the first."""

    def __init__(self, more: int = 0):
        self.more = more

    def poll(self, timeout=None) -> bool:
        return True  # a closed pipe polls true too

    def recv_bytes(self) -> bytes:
        if not self.more:
            raise EOFError
        self.more -= 1
        return json.dumps(answer()).encode()


TASK = lab01.TASKS[0]  # 1a: 2 points, 40 cases


def answer(**changes) -> dict:
    result = TaskResult(TASK.id, TASK.title, TASK.points, 1.0, "wrong", 20, TASK.num_cases, "x")
    return {**result.to_dict(), **changes}


def test_the_parent_computes_the_score_from_the_cases_passed():
    result = _believed(answer(score=2.0), TASK, Pipe(), 0)
    assert (result.status, result.score, result.cases_passed) == ("wrong", 1.0, 20)
    result = _believed(answer(status="passed", cases_passed=40, score=7.5), TASK, Pipe(), 0)
    assert result.score == 2


FORGED = {
    "inflated points": answer(points=4000, score=4000),
    "more cases than the task has": answer(cases_passed=4000, num_cases=4000),
    "another task's result": answer(task_id="3"),
    "passed with cases failing": answer(status="passed", cases_passed=39),
    "a status the grader never sets": answer(status="excellent"),
    "not a result": {"score": 2},
}


@pytest.mark.parametrize("forged", FORGED)
def test_a_result_that_does_not_fit_the_task_is_not_believed(forged):
    result = _believed(FORGED[forged], TASK, Pipe(), 0)
    assert (result.status, result.score) == ("crashed", 0)
    assert "does not believe" in result.message


def test_a_second_answer_or_a_failing_exit_is_not_believed():
    assert _believed(answer(), TASK, Pipe(more=1), 0).status == "crashed"
    assert "exited with code 3" in _believed(answer(), TASK, Pipe(), 3).message


def test_a_pure_tasks_verdict_is_made_in_the_parent_from_the_outputs_alone():
    """The worker claims full marks; the outputs it recorded say otherwise, and they decide."""
    task = next(t for t in lab01.TASKS if t.id == "1a")
    assert task.pure
    recording = replay.Recording(task)

    def kv_bytes_per_token(num_layers, num_kv_heads, head_dim, dtype_bytes):
        return num_layers * num_kv_heads * head_dim * dtype_bytes  # K only: half the answer

    worker = run_task(recording.task_to_play(), recording.namespace(locals()), seed=0)
    assert worker.score == 0 and len(recording.cases) == task.num_cases
    claim = answer(status="passed", cases_passed=task.num_cases, score=task.points)
    sent = json.loads(json.dumps({"result": claim, "cases": recording.cases}))  # the pipe's way
    result = _verdict(sent, task, 0, Pipe(), 0)
    assert (result.status, result.score) == ("wrong", 0)
    assert "minirt says" in result.message
    missing = _verdict({"result": claim, "cases": None}, task, 0, Pipe(), 0)
    assert (missing.status, missing.score) == ("crashed", 0)


def test_a_played_tasks_verdict_is_made_in_the_parent_which_runs_minirts_side(tmp_path):
    """Lab 1's engine task: the worker runs only the learner's books and sends what the engine
    did; a worker that claims full marks for books that free blocks in the wrong order is judged
    on that record here."""
    from tests.labs.common import cells_into_namespace, planted

    task = next(t for t in lab01.TASKS if t.id == "4")
    assert task.play is not None and task.judged_apart
    recording = replay.Recording(task)
    order = ("for b in reversed(self.tables.pop(seq_id)):", "for b in self.tables.pop(seq_id):")
    ns = cells_into_namespace(planted(SOURCE, tmp_path, order), lambda src: "llm.generate(" in src)
    worker = run_task(task, ns, 0, play=recording.player(ns), judge=False)
    assert worker.status == "passed" and len(recording.cases) == task.num_cases  # nothing judged
    claim = worker.to_dict()  # full marks, as the worker reports them
    sent = json.loads(json.dumps({"result": claim, "cases": recording.cases}))
    result = _verdict(sent, task, 0, Pipe(), 0)
    assert result.status == "wrong" and result.score < task.points, result.message
    assert "yours" in result.message and "minirt" in result.message
    # a record that is not one outcome per case is a failed case, never a crash of the grader
    broken = _verdict({"result": claim, "cases": [[]] * task.num_cases}, task, 0, Pipe(), 0)
    assert (broken.status, broken.score) == ("error", 0)


def test_what_the_worker_records_travels_as_data_and_comes_back_equal():
    """encode/decode: JSON and safetensors bytes only; the parent never unpickles."""
    import numpy as np
    import torch

    value = {"t": torch.arange(6, dtype=torch.int8).view(2, 3), "a": np.ones(3), "k": (1, 2.5)}
    value |= {"b": b"\x00\xff", "n": None, 3: [True, "x"], "f": float("nan")}
    back = replay.decode(json.loads(json.dumps(replay.encode(value))))
    assert torch.equal(back["t"], value["t"]) and back["t"].dtype == torch.int8
    assert np.array_equal(back["a"], value["a"]) and back["k"] == (1, 2.5)
    assert back["b"] == b"\x00\xff" and back["n"] is None and back[3] == [True, "x"]
    assert back["f"] != back["f"]  # nan
    assert repr(replay.decode(replay.encode(lambda: 0))) == "<a function>"
    from minirt.tools.streams import Program  # one of minirt's dataclasses: rebuilt by fields

    program = Program("p").h2d("kv", stream="copy", nbytes=64)
    assert replay.decode(json.loads(json.dumps(replay.encode(program)))) == program


def test_a_message_every_task_shares_is_printed_once_under_the_table():
    from minirt.grading.runner import GradeReport

    refused = "cell 3, line 1: `import minirt.kv` is refused"
    report = GradeReport("lab01_kv_blocks", "x.ipynb", 0)
    for i, message in enumerate([refused, refused, "2 of 4 cases fail", refused]):
        report.results.append(TaskResult(str(i + 1), "t", 1, 0, "refused", 0, 4, message))
    notes = report.table().splitlines()[-2:]
    assert notes == [f"tasks 1, 2, 4: {refused}", "task 3: 2 of 4 cases fail"]


def test_a_slow_task_gets_its_own_least_time_limit(monkeypatch):
    """Lab 4's model task runs a model in Triton's interpreter: it gets 120 s even when the
    grader's --timeout is shorter; every other task gets the --timeout."""
    from minirt.grading import lab04, runner

    given = {}

    def fake(cells, lab, task, seed, timeout):
        given[task.id] = timeout
        return TaskResult(task.id, task.title, task.points, 0, "not implemented", 0, 1, "")

    monkeypatch.setattr(runner, "_run_isolated", fake)
    runner.grade_notebook(ROOT / "labs" / "lab04_quantization.ipynb", timeout=5)
    assert given == {t.id: (120 if t.id == "5" else 5) for t in lab04.TASKS}
