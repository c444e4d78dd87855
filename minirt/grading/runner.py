"""Grade a learner's notebook: each task in its own fresh process, with a time limit.

First the guard reads the learner's cells (minirt.grading.guard): a notebook that uses what the
lab compares it with scores 0 on every task, with the line that does it. The worker then runs the
notebook's code cells (not its self-check cells) top to bottom in a fresh namespace, a cell that
raises is noted and skipped, checks the objects the task needs, then plays the task's cases. A
process per task means a crash, an endless loop or a stray `sys.exit` in one task costs that task
only, and no state leaks between tasks; forking is cheap because minirt is already imported.

The worker runs in a process group of its own, which the parent kills when the task is over
(whatever the notebook started dies with it), in a scratch working directory the parent removes,
with its output caught at the file-descriptor level. The parent believes only a result that fits
the task (its id, points and number of cases) and computes the score itself from the cases passed.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import linecache
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import torch

from minirt.grading import guard, replay
from minirt.grading.core import (
    GRADING_ENV,
    SOURCE_DIR,
    STATUSES,
    TaskResult,
    find_lab,
    load_lab,
    run_task,
)

SKIP_TAGS = {"self-check", "grader-skip"}  # cells the grader does not run
OUTPUT = "output.txt"  # what the notebook wrote to its stdout and stderr, in the scratch folder


@dataclass
class GradeReport:
    """The score table of one notebook: a `TaskResult` per task, and the seed to replay it."""

    lab: str
    notebook: str
    seed: int
    results: list[TaskResult] = field(default_factory=list)

    @property
    def score(self) -> float:
        return round(sum(r.score for r in self.results), 2)

    @property
    def points(self) -> int:
        return sum(r.points for r in self.results)

    @property
    def full_marks(self) -> bool:
        return self.score == self.points

    def to_dict(self) -> dict:
        return {
            "lab": self.lab,
            "notebook": self.notebook,
            "seed": self.seed,
            "score": self.score,
            "points": self.points,
            "results": [r.to_dict() for r in self.results],
        }

    def table(self) -> str:
        """The score table, then a line per task that lost points saying why."""
        rows = [("task", "what", "score", "cases", "result")]
        for r in self.results:
            cases = f"{r.cases_passed}/{r.num_cases}"
            rows.append((r.task_id, r.title, f"{r.score:g}/{r.points}", cases, r.status))
        rows.append(("total", "", f"{self.score:g}/{self.points}", "", ""))
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        rule = "-" * max(len(line) for line in lines)
        by_message: dict[str, list[str]] = {}  # a refusal of the whole notebook: said once
        for r in self.results:
            if r.message:
                by_message.setdefault(r.message, []).append(r.task_id)
        notes = [
            f"{'task' if len(ids) == 1 else 'tasks'} {', '.join(ids)}: {message}"
            for message, ids in by_message.items()
        ]
        return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1], *notes])


def notebook_cells(path: Path) -> list[tuple[int, str]]:
    """(cell number, Python source) of the code cells the grader runs, IPython magics removed."""
    return [(number, source) for number, source, _ in _code_cells(path)]


def _code_cells(path: Path) -> list[tuple[int, str, bool]]:
    """notebook_cells, and whether each is a solution cell (nbgrader's metadata)."""
    nb = nbformat.read(path, as_version=4)
    cells = []
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code" or SKIP_TAGS & set(cell.metadata.get("tags", [])):
            continue
        lines = cell.source.splitlines()
        if lines and lines[0].startswith("%%"):  # a cell magic (%%time…): run the body as Python
            lines = lines[1:]
        # `%matplotlib`, `!pip`: IPython, not Python; the grader does not need them
        lines = ["pass  # " + ln if ln.lstrip().startswith(("%", "!")) else ln for ln in lines]
        solution = bool(cell.metadata.get("nbgrader", {}).get("solution"))
        cells.append((number, "\n".join(lines), solution))
    return cells


def learner_cells(path: Path, lab: str) -> list[tuple[int, str]]:
    """The cells the learner wrote: the solution cells, and every cell that is not one of the
    lab's author cells as published (added or edited). Without the lab's source at hand (an
    installed package), the solution cells."""
    authored = _authored(lab)
    return [
        (number, src)
        for number, src, solution in _code_cells(path)
        if solution or (authored and src not in authored)
    ]


def _authored(lab: str) -> set[str]:
    """The sources of the lab's author cells as published (empty without the lab's source)."""
    source = SOURCE_DIR / f"{lab}.ipynb"
    if not source.is_file():
        return set()
    return {src for _, src, solution in _code_cells(source) if not solution}


def _learners_own(refusals: list[guard.Refusal], path: Path, lab: str) -> list[guard.Refusal]:
    """The refusals of lines the learner wrote: in an author cell the learner edited (an import
    added to the first cell, say) the author's own lines stay the author's."""
    lines = {ln.strip() for src in _authored(lab) for ln in src.splitlines() if ln.strip()}
    cells = {number: (src, solution) for number, src, solution in _code_cells(path)}
    kept = []
    for r in refusals:
        cell, _, line = r.where.removeprefix("cell ").partition(", line ")
        src, solution = cells.get(int(cell), ("", True)) if cell.isdigit() else ("", True)
        text = src.splitlines()[int(line) - 1].strip() if line.isdigit() else None
        if solution or text not in lines:
            kept.append(r)
    return kept


def _isolate(workdir: str) -> None:
    """In the child, before any of the notebook runs: a process group of its own (the parent
    kills the group), the scratch folder as working directory, and file descriptors 1 and 2 in
    a file there (an `os.write(1, ...)` must not land in the score table)."""
    with contextlib.suppress(OSError):  # the parent sets it too; whoever is first
        os.setpgid(0, 0)
    os.chdir(workdir)
    sys.stdout.flush()
    sys.stderr.flush()
    out = os.open(os.path.join(workdir, OUTPUT), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)


def _worker(
    conn,
    cells: list[tuple[int, str]],
    lab: str,
    task_id: str,
    seed: int,
    timeout: float,
    workdir: str,
) -> None:
    """In the child: run the cells into a fresh namespace, check what the task needs is the
    learner's own, play the task; send its result."""
    started = time.monotonic()
    _isolate(workdir)
    os.environ[GRADING_ENV] = "1"
    # A forked child that enters an OpenMP parallel region after its parent did hangs (libgomp
    # is not fork-safe); one thread keeps torch out of OpenMP, and grading cases are small.
    torch.set_num_threads(1)
    os.environ.setdefault("MPLBACKEND", "Agg")  # plots in the notebook must not open windows
    sys.stdin = open(os.devnull)  # an input() in the notebook must not wait for a person
    grader = load_lab(lab)
    task = next(t for t in grader.TASKS if t.id == task_id)
    # bound before the learner's cells run: a cell that rebinds them in their modules changes
    # nothing here (the guard refuses such cells first; this is the second line)
    play, check_objects = run_task, guard.check_objects
    os.environ.update(dict(task.env))
    namespace: dict = {"__name__": "__main__"}
    failed_cells = []
    out = io.StringIO()  # what the notebook prints must not mix into the score table
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        for number, source in cells:
            # As IPython does: the cell's source in linecache, so that inspect (and @triton.jit,
            # which reads a kernel's source) finds functions defined in it.
            name = f"<cell {number}>"
            linecache.cache[name] = (len(source), None, source.splitlines(True), name)
            try:
                exec(compile(source, f"<cell {number}>", "exec"), namespace)
            except (Exception, SystemExit) as e:
                first = source.strip().splitlines()[0][:40] if source.strip() else ""
                failed_cells.append(f"cell {number} ({first!r}) raised {type(e).__name__}: {e}")
        forbidden = getattr(grader, "FORBIDDEN", None)
        needed = {n: namespace[n] for n in task.needs if n in namespace}
        refusals = check_objects(needed, forbidden) if forbidden else []
        recording = replay.Recording(task) if task.judged_apart else None
        deadline = started + 0.9 * timeout  # cases not played by then fail; the rest keep credit
        if refusals:
            result = refused(task, refusals)
        elif task.play:  # the parent judges what the learner's code did on each case
            player = recording.player(namespace)
            result = play(task, namespace, seed, deadline, play=player, judge=False)
        elif recording:  # the parent judges what the learner's functions returned
            result = play(recording.task_to_play(), recording.namespace(namespace), seed, deadline)
        else:
            result = play(task, namespace, seed, deadline=deadline)
    if result.status == "missing" and failed_cells:
        result.message += "; " + "; ".join(failed_cells)
    # JSON through the pipe, never pickle: the parent must not run what a notebook could forge
    answer = {"result": result.to_dict(), "cases": recording.cases if recording else None}
    conn.send_bytes(json.dumps(answer).encode())
    conn.close()


def refused(task, refusals: list[guard.Refusal]) -> TaskResult:
    shown = "; ".join(map(str, refusals[:3]))
    more = f" (and {len(refusals) - 3} more)" if len(refusals) > 3 else ""
    return TaskResult(
        task.id, task.title, task.points, 0, "refused", 0, task.num_cases, shown + more
    )


def _context(task):
    # fork: the child starts with minirt already imported (a spawn would re-import torch, ~3 s a
    # task). Only on Linux: macOS system libraries are not fork-safe, Windows has no fork. A task
    # with its own environment spawns a fresh interpreter: TRITON_INTERPRET, say, must be set
    # before triton is first imported (its @jit library functions read it then), and minirt is.
    fork = sys.platform == "linux" and not task.env
    return multiprocessing.get_context("fork" if fork else "spawn")


@contextlib.contextmanager
def _environ(env: dict[str, str]):
    """os.environ with `env` added while the block runs (a spawned child inherits it)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_isolated(cells, lab: str, task, seed: int, timeout: float) -> TaskResult:
    ctx = _context(task)
    receive, send = ctx.Pipe(duplex=False)
    workdir = tempfile.mkdtemp(prefix="minirt-grading-")
    args = (send, cells, lab, task.id, seed, timeout, workdir)
    proc = ctx.Process(target=_worker, args=args, daemon=True)
    with _environ(dict(task.env)):
        proc.start()
    with contextlib.suppress(OSError):  # the child sets it too; whoever is first
        os.setpgid(proc.pid, proc.pid)
    send.close()  # so that recv() sees EOF if the child dies without answering
    try:
        if receive.poll(timeout):
            answer = _json_answer(receive.recv_bytes())
            proc.join(5)  # it has nothing left to do
            return _verdict(answer, task, seed, receive, proc.exitcode)
        status, message = "timeout", f"no answer within {timeout:g} s (an endless loop?)"
    except EOFError:
        proc.join(5)
        status, message = "crashed", f"the grading process died (exit code {proc.exitcode})"
        message += _last_output(workdir)
    finally:
        _kill_group(proc)
        receive.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return TaskResult(task.id, task.title, task.points, 0, status, 0, task.num_cases, message)


def _last_output(workdir: str, chars: int = 300) -> str:
    """'; its last output: …' from what the child wrote (a traceback, say), or ''."""
    try:
        text = Path(workdir, OUTPUT).read_text(errors="replace").strip()
    except OSError:
        return ""
    return f"; its last output: {text[-chars:]}" if text else ""


def _kill_group(proc) -> None:
    """The child and everything it started (its process group): nothing outlives the task."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.is_alive():
        proc.kill()
    proc.join()


def _another_answer(receive) -> bool:
    """Whether the child sent more than its one answer (poll is true at the end of the pipe too)."""
    try:
        return receive.poll(0) and receive.recv_bytes() is not None
    except (EOFError, OSError):
        return False


def _verdict(answer, task, seed: int, receive, exitcode) -> TaskResult:
    """The task's result: a pure or played task's judged here on the outputs the worker recorded
    (its own verdict counts only where it played nothing: refused, missing); any other task's as
    the worker reported it, if it fits the task (`_believed`)."""
    if not isinstance(answer, dict) or "result" not in answer:
        answer = {"result": answer}
    result = _believed(answer["result"], task, receive, exitcode)
    if not task.judged_apart or result.status in ("refused", "missing", "crashed"):
        return result
    cases = answer.get("cases")
    if not isinstance(cases, list) or not all(isinstance(c, list) for c in cases):
        return _forged(task, "no record of the learner's outputs")
    if len(cases) > task.num_cases:
        return _forged(task, "more cases than the task has")
    if task.play:
        names = dict.fromkeys(task.needs)  # present; never called: the recorded outcomes stand in
        return run_task(task, names, seed, played=len(cases), play=replay.replayed_player(cases))
    judged, stand_in = replay.replayed(task, cases)
    return run_task(judged, stand_in, seed, played=len(cases))


def _json_answer(data: bytes) -> dict | list | None:
    """The child's one message, or None if it is not JSON (then nothing is believed)."""
    try:
        return json.loads(data)
    except ValueError:
        return None


def _forged(task, why: str) -> TaskResult:
    message = f"the grading process sent a result the grader does not believe ({why})"
    return TaskResult(task.id, task.title, task.points, 0, "crashed", 0, task.num_cases, message)


def _believed(answer, task, receive, exitcode) -> TaskResult:
    """The child's result if it fits the task, with the score the parent computes from the
    cases passed; else a crashed result that says why. The child sends one result and exits."""

    def forged(why: str) -> TaskResult:
        return _forged(task, why)

    if _another_answer(receive):
        return forged("more than one answer")
    if exitcode not in (0, None):  # None: still running (a thread of the notebook's); killed
        return forged(f"it answered, then exited with code {exitcode}")
    try:
        result = TaskResult(**answer)
    except TypeError as e:
        return forged(str(e))
    passed = result.cases_passed
    fits = (result.task_id, result.title, result.points, result.num_cases) == (
        task.id,
        task.title,
        task.points,
        task.num_cases,
    )
    if not fits or type(passed) is not int or not 0 <= passed <= task.num_cases:
        return forged("it does not fit the task")
    if result.status not in STATUSES or (result.status == "passed") != (passed == task.num_cases):
        return forged(f"status {result.status!r} with {passed} of {task.num_cases} cases")
    result.score = (
        0 if result.status == "refused" else round(task.points * passed / task.num_cases, 2)
    )
    result.message = str(result.message)
    return result


def grade_notebook(
    path: str | Path, lab: str | None = None, seed: int | None = None, timeout: float = 30.0
) -> GradeReport:
    """Grade the notebook at `path` with its lab's tasks (looked up from its name unless given)."""
    path = Path(path)
    lab = lab or find_lab(path.stem)
    if lab is None:
        raise KeyError(f"{path.name} is not a known lab; name it after one or pass lab=...")
    grader = load_lab(lab)
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    cells = notebook_cells(path)
    report = GradeReport(lab, str(path), seed)
    forbidden = getattr(grader, "FORBIDDEN", None)
    refusals = []
    if forbidden:
        imported = set()  # what every cell imports: patching it would change minirt or the grader
        for _, source in cells:
            try:
                imported |= guard.imported_names(ast.parse(source))
            except SyntaxError:
                continue
        refusals = guard.check_source(learner_cells(path, lab), forbidden, imported)
        refusals = _learners_own(refusals, path, lab)
    for task in grader.TASKS:
        if refusals:  # nothing of the notebook runs
            report.results.append(refused(task, refusals))
        else:
            limit = max(timeout, task.seconds)
            report.results.append(_run_isolated(cells, lab, task, seed, limit))
    return report
