"""Lab 4's grader: each planted bug costs its own task, with a message that names the mistake.

(Full marks for the solution and 0 for the student notebook are in test_grading.py, for every
lab.) The bugs of tasks 1-3 are graded in this process (the cells run into a namespace, as the
grader's worker runs them; faster than a process per task). The kernel and the quantized model
(tasks 4 and 5) need Triton's interpreter from the start (TRITON_INTERPRET=1 before triton is
first imported), so their bugs are graded in one fresh interpreter for all of them
(`interpreted`), every task of the lab on each bug; one bug goes through `grade_notebook`, whose
worker plays the learner's side and whose parent judges it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
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
    return run_in_process(path, lab04.TASKS, keep=lambda t: t.id not in ("4", "5"))


BUGS = {  # a planted bug -> (the task that catches it, edits, what its message says[, the
    # task that also loses because it calls the broken function])
    "symmetric scale divides by 8": (
        "1a",
        [("scales = (g.abs().amax(-1) / 7)", "scales = (g.abs().amax(-1) / 8)")],
        ["you divided by 8", "no level +8"],
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


# -- the kernel and the model, in Triton's interpreter ------------------------------------------
GEMV_ARGS = "    n, k = packed.shape[0], packed.shape[1] * 8\n"
MODEL_BUGS = {  # a planted bug -> ({task: cases it keeps}, edits, {task: what its message says})
    "nibbles packed in the wrong order": (  # minirt packs tasks 3-4's weights: they see nothing
        {"2": 1, "5": 0},
        [
            (
                "torch.arange(0, 32, 4, dtype=torch.int64)",
                "torch.arange(28, -4, -4, dtype=torch.int64)",
            )
        ],
        {"5": ["model.layers.0.self_attn.qkv_proj", "your nibbles run the other way"]},
    ),
    "the zero point off by one": (  # only the asymmetric model case has zero points
        {"1b": 0, "5": 1},
        [
            (
                "zeros = torch.round(-lo / scales).clamp(0, 15)",
                "zeros = torch.round(-lo / scales).clamp(0, 15) + 1",
            )
        ],
        {"1b": ["zeros[0, 0] is 9, minirt says 8"], "5": ["perplexity", "zeros[0, 0] is"]},
    ),
    "the GEMV reads another row's group scale": (  # one row or one group: the cases it passes
        {"4": 3, "5": 0},
        [
            (
                "group = rows[:, None] * (K // GROUP_SIZE) + cols[None, :] // GROUP_SIZE",
                "group = rows[:, None] + cols[None, :] // GROUP_SIZE",
            )
        ],
        {
            "4": ["minirt's dequantize_int4(W) @ x says"],
            "5": ["weights, scales and zero points are minirt's in every layer", "w4a16_gemv"],
        },
    ),
    "a PyTorch fallback for the model's fp32 activations": (  # task 4's x is fp16
        {"5": 0},
        [
            (
                GEMV_ARGS,
                GEMV_ARGS + "    if x.dtype == torch.float32:\n"
                "        return dequantize(packed, scales, zeros, group_size) @ x\n",
            )
        ],
        {"5": ["w4a16_gemv_kernel was launched 0 times for", "PyTorch fallback"]},
    ),
}

GRADE_IN_THE_INTERPRETER = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from minirt.grading import lab04, run_task
from tests.labs.common import cells_into_namespace
from minirt import LLM, SamplingParams
from minirt.quant.linear import int4_method


def served(ns):  # greedy tokens of the same engine on minirt's INT4 and on the notebook's
    yours = int4_method(ns["quantize_sym"], ns["pack"], ns["w4a16_gemv"], group_size=32)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    runs = {"minirt": "w4a16-g32", "yours": yours}
    return {name: LLM("draft", device="cpu", quantization=m).generate(["def "], params,
            use_tqdm=False)[0].token_ids for name, m in runs.items()}


results = {}
for name, path in json.loads(sys.argv[1]):
    namespace = cells_into_namespace(Path(path))
    if name == "served":
        results[name] = served(namespace)
    else:
        results[name] = {t.id: run_task(t, namespace, seed=0).to_dict() for t in lab04.TASKS}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> dict:
    """{bug: {task id: its TaskResult (a dict)}}, every bug graded in one fresh interpreter;
    "served": the solution's greedy tokens on the engine, and minirt's."""
    jobs = [["served", str(SOURCE)]]
    for k, (bug, (_, edits, _)) in enumerate(MODEL_BUGS.items()):
        jobs.append([bug, str(planted(tmp_path_factory.mktemp(f"bug{k}"), *edits))])
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-c", GRADE_IN_THE_INTERPRETER, json.dumps(jobs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("bug", MODEL_BUGS)
def test_a_planted_kernel_or_model_bug_loses_the_cases_that_see_it_and_says_why(bug, interpreted):
    keeps, _, says = MODEL_BUGS[bug]
    results = interpreted[bug]
    lost = {t: r["cases_passed"] for t, r in results.items() if r["status"] != "passed"}
    assert lost == keeps, {t: r["message"][:300] for t, r in results.items()}
    assert {results[t]["status"] for t in keeps} == {"wrong"}
    for task, fragments in says.items():
        message = results[task]["message"]
        assert all(fragment in message for fragment in fragments), message


def test_the_solution_plugged_into_every_layer_serves_the_engine_end_to_end(interpreted):
    """`LLM(quantization=int4_method(...))` on the notebook's functions generates what minirt's
    own W4A16 method does, prefill and decode (its kernel in every quantized layer)."""
    tokens = interpreted["served"]
    assert len(tokens["yours"]) == 6 and tokens["yours"] == tokens["minirt"]


def test_a_model_bug_is_judged_in_the_graders_own_process(tmp_path):
    """Through the grader's processes: the worker sends the learner's log-probs, counts and
    packed weights; the parent runs minirt's model and names the kernel."""
    _, edits, says = MODEL_BUGS["the GEMV reads another row's group scale"]
    report = grade_notebook(planted(tmp_path, *edits), seed=0)
    wrong = {r.task_id: r for r in report.results if r.status != "passed"}
    assert {t: r.status for t, r in wrong.items()} == {"4": "wrong", "5": "wrong"}
    assert all(fragment in wrong["5"].message for fragment in says["5"]), wrong["5"].message


def test_the_kernel_task_refuses_a_plain_torch_function():
    def w4a16_gemv(x, packed, scales, zeros, group_size):
        q = F.Int4Weight(packed, scales, zeros, (packed.shape[0], packed.shape[1] * 8), group_size)
        return F.dequantize_int4(q) @ x.float()

    task = next(t for t in lab04.TASKS if t.id == "4")
    namespace = {"w4a16_gemv": w4a16_gemv, "w4a16_gemv_kernel": w4a16_gemv}
    result = run_task(task, namespace, seed=0)
    assert result.status == "wrong" and "@triton.jit kernel" in result.message


CHEATS = {  # how a notebook reaches minirt's INT4 -> (edits, what the refusal names)
    "the GEMV delegates to minirt's kernel": (
        [
            (
                GEMV_ARGS,
                "    from minirt.kernels.w4a16_gemm import w4a16_gemm_ref\n" + GEMV_ARGS,
            )
        ],
        "minirt.kernels.w4a16_gemm",
    ),
    "the quantizer delegates to minirt's layer": (
        [
            (
                "    lo, hi = g.amin(-1)",
                "    from minirt.quant.linear import QuantLinear\n    lo, hi = g.amin(-1)",
            )
        ],
        "minirt.quant.linear",
    ),
}


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_notebook_importing_minirts_quant_or_kernels_scores_0_on_every_task(cheat, tmp_path):
    edits, names = CHEATS[cheat]
    report = grade_notebook(planted(tmp_path, *edits), seed=0)
    assert {r.status for r in report.results} == {"refused"} and report.score == 0
    assert names in report.results[-1].message, report.results[-1].message


def test_grading_cases_include_ties_free_edge_groups():
    """Case 1's weight has an all-zero group (scale clamps, codes 8 / zero point 0) and
    all-positive and all-negative groups (asymmetric zero points 0 and 15)."""
    w, gs, _ = lab04._weight(random.Random(0), 1)
    q = F.quantize_int4(w, gs, symmetric=False)
    assert {int(z) for z in q.zeros.flatten()} >= {0, 15}
    assert torch.equal(F.dequantize_int4(F.quantize_int4(w, gs))[2, 16:], torch.zeros(16))
