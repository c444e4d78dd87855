"""The verdict of a pure task is computed where the learner's code never runs.

For a task whose learner functions are pure (`Task.pure`: their answer is their return value), the
worker that runs the notebook only records what each call returned (or raised), case by case, as
plain data. The parent then plays the same cases again, from the same seed, against minirt's own
answers, with a stand-in that returns the recorded outputs in order: the expected values, the
comparison and the score are all made in the parent. A worker that forges its result has nothing
to forge but the learner's outputs.
"""

from __future__ import annotations

import builtins
import pickle
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from minirt.grading.core import Refused, Task, _where


class Recording:
    """In the worker: the task's needed functions wrapped so that every call's outcome is kept,
    a list of calls per case (`cases`)."""

    def __init__(self, task: Task):
        self.task = task
        self.cases: list[list[tuple]] = []

    def task_to_play(self) -> Task:
        def check(learner, rng, i):
            self.cases.append([])
            return self.task.check(learner, rng, i)

        return replace(self.task, check=check)

    def namespace(self, namespace: Mapping[str, Any]) -> dict[str, Any]:
        return {n: self._recorded(namespace[n]) for n in self.task.needs if n in namespace}

    def _recorded(self, func):
        def call(*args, **kwargs):
            try:
                value = func(*args, **kwargs)
            except (Exception, SystemExit) as e:
                self.cases[-1].append(("raise", *_exception(e)))
                raise
            self.cases[-1].append(("return", _plain(value)))
            return value

        return call


def _exception(e: BaseException) -> tuple[str, str, bool]:
    """(type name, message with where it was raised, whether it is a refusal); a stub's hint
    and a refusal keep their message as it is."""
    plain = isinstance(e, (NotImplementedError, Refused))
    return type(e).__name__, f"{e}{'' if plain else _where(e)}", isinstance(e, Refused)


class Opaque:
    """A returned value that cannot leave the worker (a generator, a lambda): only its type."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<a {self.type_name}>"


def _plain(value: Any) -> Any:
    """A copy of `value` as it is now (the learner may change the object later), or Opaque."""
    try:
        return pickle.loads(pickle.dumps(value))
    except Exception:  # whatever pickling raises, only the type travels
        return Opaque(type(value).__name__)


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
                return outcome[1]
            raise _rebuilt(*outcome[1:])

        call.__name__ = name
        return call

    return replace(task, check=check), {n: stand_in(n) for n in task.needs}


def _rebuilt(type_name: str, message: str, refused: bool) -> BaseException:
    if refused:
        return Refused(message)
    cls = getattr(builtins, type_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = type(type_name, (Exception,), {})  # the learner's own exception class, by name
    return cls(message)
