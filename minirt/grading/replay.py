"""The verdict of a pure task is computed where the learner's code never runs.

For a task whose learner functions are pure (`Task.pure`: their answer is their return value), the
worker that runs the notebook only records what each call returned (or raised), case by case, as
plain data (JSON, tensors as safetensors bytes: nothing the worker sends is ever unpickled).
The parent then plays the same cases again, from the same seed, against minirt's own
answers, with a stand-in that returns the recorded outputs in order: the expected values, the
comparison and the score are all made in the parent. A worker that forges its result has nothing
to forge but the learner's outputs.

A task on code that keeps state (`Task.play`: a class driven through a case, the engine running on
the learner's part) is recorded the same way, one call per case: the worker keeps what `play`
returned on the learner's code; the parent draws the same case, computes minirt's outputs
(`Task.expect`) and compares.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from minirt.grading.core import Mismatch, Refused, Task, _where
from minirt.grading.plain import Opaque, decode, encode

__all__ = ["Opaque", "Recording", "decode", "encode", "replayed", "replayed_player"]


class Recording:
    """In the worker: the task's needed functions wrapped so that every call's outcome is kept,
    a list of calls per case (`cases`)."""

    def __init__(self, task: Task):
        self.task = task
        self.cases: list[list[list]] = []  # per case, per call: ["return", value] or ["raise", ...]

    def task_to_play(self) -> Task:
        def check(learner, rng, i):
            self.cases.append([])
            return self.task.check(learner, rng, i)

        return replace(self.task, check=check)

    def namespace(self, namespace: Mapping[str, Any]) -> dict[str, Any]:
        return {n: self._recorded(namespace[n]) for n in self.task.needs if n in namespace}

    def player(self, namespace: Mapping[str, Any]):
        """A played task's `play(case)` on the learner's names, each case's outcome kept."""
        learner = SimpleNamespace(**{n: namespace[n] for n in self.task.needs if n in namespace})
        recorded = self._recorded(lambda case: self.task.play(learner, case))

        def play(case):
            self.cases.append([])
            return recorded(case)

        return play

    def _recorded(self, func):
        def call(*args, **kwargs):
            try:
                value = func(*args, **kwargs)
            except (Exception, SystemExit) as e:
                self.cases[-1].append(["raise", *_exception(e)])
                raise
            self.cases[-1].append(["return", encode(value)])
            return value

        return call


def _exception(e: BaseException) -> tuple[str, str, str, int | None]:
    """(type name, message with where it was raised, kind, size): kind "refused" or "mismatch"
    (a played task's own finding, `Mismatch.size` kept), else "". A stub's hint, a refusal and a
    finding keep their message as it is."""
    plain = isinstance(e, (NotImplementedError, Refused, Mismatch))
    kind = "refused" if isinstance(e, Refused) else "mismatch" if isinstance(e, Mismatch) else ""
    size = e.size if isinstance(e, Mismatch) and isinstance(e.size, int) else None
    return type(e).__name__, f"{e}{'' if plain else _where(e)}", kind, size


def replayed(task: Task, cases: list[list[tuple]]) -> tuple[Task, dict[str, Any]]:
    """In the parent: the task and the learner's stand-in that give each case its recorded
    outputs, in the order the worker's calls made them."""
    current: list[list[tuple]] = []

    def check(learner, rng, i):
        current[:] = [list(cases[i])]
        return task.check(learner, rng, i)

    def stand_in(name: str):
        def call(*args, **kwargs):
            if not current or not current[0]:
                raise RuntimeError(f"{name} was called more often than in the grading process")
            outcome = current[0].pop(0)
            if outcome[0] == "return":
                return decode(outcome[1])
            raise _rebuilt(*outcome[1:])

        call.__name__ = name
        return call

    return replace(task, check=check), {n: stand_in(n) for n in task.needs}


def replayed_player(cases: list[list]):
    """In the parent: a played task's `play(case)` that gives each case, in order, the outcome
    the worker recorded for it."""
    left = iter(cases)

    def play(case):
        outcome = next(left, None)
        if not isinstance(outcome, list) or len(outcome) != 1:
            raise RuntimeError("the grading process recorded no single outcome for this case")
        ((how, *what),) = outcome
        if how == "return":
            return decode(what[0])
        raise _rebuilt(*what)

    return play


def _rebuilt(
    type_name: str, message: str, kind: str | bool = "", size: int | None = None
) -> BaseException:
    if kind in ("refused", True):
        return Refused(message)
    if kind == "mismatch":
        return Mismatch(message, size if isinstance(size, int) else None)
    cls = getattr(builtins, type_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = type(type_name, (Exception,), {})  # the learner's own exception class, by name
    return cls(message)
