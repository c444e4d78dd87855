"""What a graded task is, how one is run against a learner's code, and the registry of labs.

A lab's grader module (`minirt/grading/labNN.py`) lists `TASKS`; each task draws fresh random
cases and compares the learner's answer with minirt's own. `run_task` plays every case and turns
whatever happens (right, wrong, NotImplementedError, a crash) into a `TaskResult`: credit in
proportion to the cases passed, and the smallest failing case with what differs. It never raises
for the learner. A grader may also name what its tasks are compared with (`FORBIDDEN`, see
minirt.grading.guard): the learner's code may not use it.
"""

from __future__ import annotations

import importlib
import os
import random
import re
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from minirt.grading.plain import decode, encode

# notebook name (its stem) -> the module with its TASKS. Adding a lab = one line here.
LABS: dict[str, str] = {
    "lab01_kv_blocks": "minirt.grading.lab01",
    "lab02_swap_prefetch": "minirt.grading.lab02",
    "lab03_speculative": "minirt.grading.lab03",
    "lab04_quantization": "minirt.grading.lab04",
    "lab05_bank_conflicts": "minirt.grading.lab05",
    "lab06_radix_tree": "minirt.grading.lab06",
    "lab07_scheduling": "minirt.grading.lab07",
    "lab08_paged_attention": "minirt.grading.lab08",
    "lab09_moe_dispatch": "minirt.grading.lab09",
    "lab10_profiling": "minirt.grading.lab10",
}

# Set in the grader's worker processes, so that self-check cells become no-ops there.
GRADING_ENV = "MINIRT_GRADING"

# The lab sources (solutions, with their author cells) in a checkout of the repository; the
# guard tells the learner's cells from the author's by them. Absent in an installed package.
SOURCE_DIR = Path(__file__).resolve().parents[2] / "labs" / "source"


class Refused(Exception):
    """The object under test comes from what the task compares it with (see guard.py)."""


class Mismatch(Exception):
    """The learner's answer differs from minirt's on one case; the message shows the case.

    `size` measures the case's input (tokens, operations, requests): of the failing cases the
    report shows the one of smallest size, the easiest to debug (without a size: the first).
    """

    def __init__(self, message: str, size: int | None = None):
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class Task:
    """One graded task: the names the notebook must define and a check run on `num_cases` cases.

    `check(learner, rng, i)` plays case `i` (the first indices may be fixed edge cases) and raises
    `Mismatch` on a wrong answer; `learner` has the `needs` names as attributes.

    A task on code that keeps state (a class, the engine running on the learner's part) is given
    in four pieces instead of `check`, so that its verdict is computed apart from the learner's
    code: `draw(rng, i)` makes case `i`; `play(learner, case)` runs the learner's code on it and
    returns what came out as plain data (lists, dicts, numbers, tensors); `expect(case)` is
    minirt's own outputs on the case; `compare(got, want, case)` raises `Mismatch`. The grader's
    worker only plays; the parent draws the same cases, expects and compares (`runner._verdict`).
    Where minirt's side is costly (an engine run) and much can be judged from the learner's record
    alone, `precheck(got, case)` does that first: a case it fails costs no run of minirt's side.
    """

    id: str  # as numbered in the notebook: "1a", "2"
    title: str
    points: int
    needs: tuple[str, ...]
    check: Callable[[SimpleNamespace, random.Random, int], None] | None
    num_cases: int = 50
    # Environment variables the grader's worker sets before it runs the notebook's cells, e.g.
    # (("TRITON_INTERPRET", "1"),) so that a Triton kernel task runs in the interpreter.
    env: tuple[tuple[str, str], ...] = ()
    # The learner's functions answer by what they return (no state, no side effect the check
    # reads): the worker records the outputs and the parent judges them (minirt.grading.replay).
    pure: bool = False
    draw: Callable[[random.Random, int], Any] | None = None
    play: Callable[[SimpleNamespace, Any], Any] | None = None
    expect: Callable[[Any], Any] | None = None
    compare: Callable[[Any, Any, Any], None] | None = None
    precheck: Callable[[Any, Any], None] | None = None
    # The least time limit the task gets, in seconds (a model run in Triton's interpreter is slow
    # on any machine): the grader gives it the larger of this and its --timeout.
    seconds: float = 0.0

    def __post_init__(self):
        pieces = (self.draw, self.play, self.expect, self.compare)
        if (self.check is None) != all(p is not None for p in pieces):
            raise TypeError(f"task {self.id}: give either check or draw, play, expect and compare")

    @classmethod
    def played(cls, id: str, title: str, points: int, needs: tuple[str, ...], num_cases: int,
               pieces: tuple, env: tuple = (), **options) -> Task:  # fmt: skip
        """A task on code with state, given as `pieces` = (draw, play, expect, compare);
        `options`: precheck, seconds."""
        draw, play, expect, compare = pieces
        return cls(id, title, points, needs, None, num_cases, env, draw=draw, play=play,
                   expect=expect, compare=compare, **options)  # fmt: skip

    @property
    def judged_apart(self) -> bool:
        """Whether the parent judges what the worker recorded (pure and played tasks)."""
        return self.pure or self.play is not None


@dataclass
class TaskResult:
    """How one task went: `status` is one of STATUSES (for a task that lost points, the status of
    the case shown), `score` the points in proportion to the cases passed, `message` the smallest
    failing case and what differs."""

    task_id: str
    title: str
    points: int
    score: float
    status: str
    cases_passed: int
    num_cases: int
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


STATUSES = ("passed", "wrong", "not implemented", "error", "missing", "timeout", "crashed")
STATUSES += ("refused",)  # the learner's code uses what the task is compared with


class CountingKernel:
    """A learner's @triton.jit kernel, counting its launches (`kernel[grid](...)`): a Triton task
    whose launcher never launched it computed its answer some other way (a PyTorch fallback)."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]

    def __getattr__(self, name):
        return getattr(self.kernel, name)


def load_lab(lab: str) -> ModuleType:
    """The grader module of `lab` (a registry key); the error lists the labs there are."""
    if lab not in LABS:
        raise KeyError(f"no grader for lab {lab!r}; known labs: {', '.join(sorted(LABS))}")
    return importlib.import_module(LABS[lab])


def find_lab(notebook_stem: str) -> str | None:
    """The registry key for a notebook name; a learner's copy ("lab01_kv_blocks-Copy1") matches
    by its `labNN` prefix."""
    if notebook_stem in LABS:
        return notebook_stem
    prefix = re.match(r"lab\d+", notebook_stem)
    matches = [k for k in LABS if prefix and k.startswith(prefix.group(0) + "_")]
    return matches[0] if len(matches) == 1 else None


def task_seed(seed: int, task_id: str) -> random.Random:
    # One stream per task: a task's cases don't depend on which other tasks ran before it.
    return random.Random(f"{seed}:{task_id}")


def run_task(
    task: Task,
    namespace: Mapping[str, Any],
    seed: int,
    deadline: float | None = None,
    played: int | None = None,
    play: Callable[[Any], Any] | None = None,
    judge: bool = True,
) -> TaskResult:
    """Play every case of the task against the names in `namespace`.

    The score is the task's points times the share of cases passed. Of the failing cases the
    message shows the smallest (`Mismatch.size`; else the first). Cases not played by `deadline`
    (a `time.monotonic()` value) count as failed, so a slow task keeps the credit it earned;
    `played`: only that many cases were played in time (a replay of the worker's run).
    A task given as draw/play/expect/compare plays each case with `play(case)` (by default the
    task's `play` on the learner's names) and, if `judge`, compares it with `expect(case)`.
    """

    def result(status: str, passed: int, message: str = "") -> TaskResult:
        score = round(task.points * passed / task.num_cases, 2)
        return TaskResult(
            task.id, task.title, task.points, score, status, passed, task.num_cases, message
        )

    missing = [name for name in task.needs if name not in namespace]
    if missing:
        return result("missing", 0, f"the notebook defines no {', '.join(missing)}")
    learner = SimpleNamespace(**{name: namespace[name] for name in task.needs})
    check = task.check
    if check is None:
        check = _played_check(task, play or _plain_player(task, learner), judge)
    rng = task_seed(seed, task.id)
    passed, failures = 0, []  # (size, case index, status, message)
    for i in range(task.num_cases):
        late = deadline is not None and time.monotonic() > deadline
        if late or (played is not None and i >= played):
            message = f"ran out of time after {i} of {task.num_cases} cases (a slow loop?)"
            failures.append((float("inf"), i, "timeout", message))
            break
        try:
            check(learner, rng, i)
            passed += 1
        except Refused as e:  # no credit for the task: its cases did not test the learner
            return result("refused", 0, str(e))
        except NotImplementedError as e:
            hint = f" — hint: {e}" if str(e) else ""
            if passed == 0 and not failures:  # nothing works yet: one line, no case
                return result("not implemented", 0, f"not implemented yet{hint}")
            failures.append((float("inf"), i, "not implemented", f"not implemented{hint}"))
        except Mismatch as e:
            size = float("inf") if e.size is None else e.size
            failures.append((size, i, "wrong", f"{e}{_where(e.__cause__)}"))
        except (Exception, SystemExit) as e:  # the learner's code crashed: that case fails
            failures.append((float("inf"), i, "error", f"{type(e).__name__}: {e}{_where(e)}"))
    if not failures:
        return result("passed", passed)
    size, i, status, message = min(failures, key=lambda f: (f[0], f[1]))
    failed = task.num_cases - passed
    smallest = "the smallest" if size != float("inf") else "the first"
    head = f"{failed} of {task.num_cases} cases fail; {smallest}, case {i + 1}: "
    return result(status, passed, head + message)


def _played_check(task: Task, player: Callable[[Any], Any], judge: bool):
    def check(learner, rng, i):
        case = task.draw(rng, i)
        got = player(case)
        if judge:
            if task.precheck is not None:
                task.precheck(got, case)
            task.compare(got, _plain(task.expect(case)), case)

    return check


def _plain_player(task: Task, learner: SimpleNamespace) -> Callable[[Any], Any]:
    """Play on the learner's code in this process (a self-check), its outputs as plain data as
    the parent would see them."""
    return lambda case: _plain(task.play(learner, case))


def _plain(value: Any) -> Any:
    """`value` as it reads after the trip from the worker to the parent (tuples stay tuples,
    tensors stay tensors; objects become their type name)."""
    return decode(encode(value))


def _where(e: BaseException | None) -> str:
    """' (cell 9, line 4)': the innermost frame outside the grader, so the learner finds it."""
    if e is None:
        return ""
    frames = traceback.extract_tb(e.__traceback__)
    cells = [f for f in frames if re.fullmatch(r"<cell \d+>", f.filename)]
    if cells:  # code the grader took from the notebook
        return f" ({cells[-1].filename[1:-1]}, line {cells[-1].lineno})"
    mine = os.path.join("minirt", "grading")
    frames = [f for f in frames if mine not in f.filename]
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def describe(result: TaskResult) -> str:
    """One line for a person: ✓/✗, the task, and the case or hint when it failed."""
    head = f"task {result.task_id} {result.title}"
    if result.status == "passed":
        return (
            f"✓ {head}: {result.num_cases}/{result.num_cases} fresh random cases agree with minirt"
        )
    score = f"{result.score:g}/{result.points}"
    return (
        f"✗ {head} ({score}): {result.status} — {result.message}" if result.message else f"✗ {head}"
    )


def self_check(lab: str, task_id: str, namespace: Mapping[str, Any], seed: int | None = None):
    """Run one task's grading cases in the notebook itself and print the verdict.

    Prints instead of raising, so "Run all" in a half-done notebook goes on to the next task.
    Inside the grader's workers it does nothing: the grader plays its own cases.
    """
    if os.environ.get(GRADING_ENV):
        return
    tasks = {t.id: t for t in load_lab(lab).TASKS}
    if task_id not in tasks:
        raise KeyError(f"lab {lab} has no task {task_id!r}; its tasks: {', '.join(tasks)}")
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    result = run_task(tasks[task_id], namespace, seed)
    line = describe(result)
    if result.status in ("wrong", "error"):
        line += (
            f"\n  (replay these cases: self_check({lab!r}, {task_id!r}, globals(), seed={seed}))"
        )
    print(line)
