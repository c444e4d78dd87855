"""Lab 4's grader: each planted bug costs its own task, with a message that names the mistake.

(Full marks for the solution and 0 for the student notebook are in test_grading.py, for every
lab.) The bugs of tasks 1-3 are graded in this process (the cells run into a namespace, as the
grader's worker runs them; faster than a process per task); the kernel's, by `grade_notebook`,
whose worker for task 4 is a fresh interpreter with TRITON_INTERPRET=1.
"""

from __future__ import annotations

import os
import random
from functools import partial
from pathlib import Path

import pytest
import torch

from minirt.grading import grade_notebook, lab04, run_task
from minirt.quant import formats as F
from tests.labs.common import grade_in_process as run_in_process
from tests.labs.common import planted as planted_in

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labs" / "source" / "lab04_quantization.ipynb"


planted = partial(planted_in, SOURCE)  # planted(tmp_path, (old, new), ...)


def grade_in_process(path: Path, monkeypatch) -> dict:
    """{task id: TaskResult} for tasks 1a-3, the notebook's cells run into one namespace."""
    # The first cell may set TRITON_INTERPRET; keep it from leaking into later tests.
    monkeypatch.setenv("TRITON_INTERPRET", os.environ.get("TRITON_INTERPRET", "0"))
    return run_in_process(path, lab04.TASKS, keep=lambda t: t.id != "4")


BUGS = {  # a planted bug -> (the task that catches it, edits, what its message says[, the
    # task that also loses because it calls the broken function])
    "symmetric scale divides by 8": (
        "1a",
        [("scales = (g.abs().amax(-1) / 7)", "scales = (g.abs().amax(-1) / 8)")],
        ["you divided by 8", "max|w| / 7"],
    ),
    "asymmetric range without 0": (
        "1b",
        [
            (
                "lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)",
                "lo, hi = g.amin(-1), g.amax(-1)",
            )
        ],
        ["the range always includes 0"],
    ),
    "nibbles packed in the wrong order": (
        "2",
        [
            (
                "torch.arange(0, 32, 4, dtype=torch.int64)",
                "torch.arange(28, -4, -4, dtype=torch.int64)",
            )
        ],
        ["your nibbles run the other way", "lowest nibble"],
    ),
    "unpacking without the mask": (
        "2",
        [("(packed[..., None] >> shifts) & 0xF", "(packed[..., None] >> shifts)")],
        ["mask each nibble with & 0xF"],
        "3",  # dequantize calls unpack: the one bug costs both, and task 2 says where it is
    ),
    "zero point subtracted after scaling": (
        "3",
        [("((codes - zero) * scales[..., None])", "(codes * scales[..., None] - zero)")],
        ["you subtracted the zero point after scaling"],
    ),
    "symmetric weights dequantized without their zero point 8": (
        "3",
        [("zero = 8.0 if zeros is None", "zero = 0.0 if zeros is None")],
        ["their zero point is the code 8"],
    ),
}


@pytest.mark.parametrize("bug", BUGS)
def test_a_planted_bug_loses_its_own_task_and_says_why(bug, tmp_path, monkeypatch):
    task, edits, says, *also = BUGS[bug]
    results = grade_in_process(planted(tmp_path, *edits), monkeypatch)
    wrong = {t: r for t, r in results.items() if r.status != "passed"}
    assert {t: r.status for t, r in wrong.items()} == dict.fromkeys([task, *also], "wrong")
    assert all(fragment in wrong[task].message for fragment in says), wrong[task].message


def test_a_kernel_reading_the_nibbles_backwards_loses_task_4_only(tmp_path):
    path = planted(tmp_path, ("((cols[None, :] % 8) * 4)", "((7 - cols[None, :] % 8) * 4)"))
    report = grade_notebook(path, seed=0)
    wrong = {r.task_id: r for r in report.results if r.status != "passed"}
    assert {t: r.status for t, r in wrong.items()} == {"4": "wrong"}
    assert "minirt's dequantize_int4(W) @ x says" in wrong["4"].message


def test_the_kernel_task_refuses_a_plain_torch_function():
    def w4a16_gemv(x, packed, scales, zeros, group_size):
        q = F.Int4Weight(packed, scales, zeros, (packed.shape[0], packed.shape[1] * 8), group_size)
        return F.dequantize_int4(q) @ x.float()

    task = next(t for t in lab04.TASKS if t.id == "4")
    namespace = {"w4a16_gemv": w4a16_gemv, "w4a16_gemv_kernel": w4a16_gemv}
    result = run_task(task, namespace, seed=0)
    assert result.status == "wrong" and "@triton.jit kernel" in result.message


def test_grading_cases_include_ties_free_edge_groups():
    """Case 1's weight has an all-zero group (scale clamps, codes 8 / zero point 0) and
    all-positive and all-negative groups (asymmetric zero points 0 and 15)."""
    w, gs, _ = lab04._weight(random.Random(0), 1)
    q = F.quantize_int4(w, gs, symmetric=False)
    assert {int(z) for z in q.zeros.flatten()} >= {0, 15}
    assert torch.equal(F.dequantize_int4(F.quantize_int4(w, gs))[2, 16:], torch.zeros(16))
