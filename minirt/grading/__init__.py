"""The autograder of the labs: `python -m minirt.grading labs/<lab>.ipynb`.

Each lab has a grader module (`minirt/grading/lab01.py`) listing its tasks; a task plays fresh
random cases against the learner's functions and compares them with minirt's own implementation.
`self_check` runs one task inside the notebook; `grade_notebook` grades a saved notebook.
"""

from minirt.grading.core import (
    LABS,
    Mismatch,
    Refused,
    Task,
    TaskResult,
    describe,
    find_lab,
    load_lab,
    run_task,
    self_check,
)
from minirt.grading.runner import GradeReport, grade_notebook

__all__ = [
    "LABS",
    "GradeReport",
    "Mismatch",
    "Task",
    "TaskResult",
    "describe",
    "find_lab",
    "grade_notebook",
    "load_lab",
    "run_task",
    "Refused",
    "self_check",
]
