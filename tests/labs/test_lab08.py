"""Lab 8's grader, graded as a student would be: a wrong kernel loses the tasks that see it, with
partial credit and a message that names the fault (the step and layer, inside the engine); a
PyTorch fallback for a Triton rung is caught by counting launches; a notebook that reaches
minirt's kernels, torch's attention or the grader scores 0; an author cell the learner edited
keeps the author's lines.

(Full marks for the solution and 0 for the untouched student notebook are in test_grading.py, for
every lab.) Planted bugs of tasks 1-3 run in this process. The Triton rungs need Triton's
interpreter from the start (TRITON_INTERPRET=1 before triton is first imported), so their bugs
are graded in one fresh interpreter for all of them (`interpreted`), each bug on its own task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from unittest import mock

import nbformat
import pytest

from minirt.grading import grade_notebook, lab08, run_task
from tests.labs.common import grade_in_process as run_in_process
from tests.labs.common import planted as planted_in
from tests.labs.common import single_thread

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labs" / "source" / "lab08_paged_attention.ipynb"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    yield from single_thread()


planted = partial(planted_in, SOURCE)  # planted(tmp_path, (old, new), ...)


def grade_in_process(path: Path) -> dict:
    """Tasks 1-3 (no Triton launch), the cells run into one namespace; the notebook's setting of
    TRITON_INTERPRET stays inside this call."""
    with mock.patch.dict(os.environ):
        return run_in_process(path, lab08.TASKS, keep=lambda t: not t.env)


BUGS = {  # a planted bug -> ({task: status}, edits, what the first one's message says)
    "padding rows written to slot -1": (  # the engine on a CPU has none: only task 1 sees it
        {"1": "wrong"},
        [("    keep = slot_mapping >= 0\n", "    keep = slot_mapping >= -1\n")],
        ["slot_mapping=[", "no token goes to that slot"],
    ),
    "block and offset from the wrong dimension": (
        {"1": "wrong", "3": "wrong"},
        [
            (
                "blocks, offsets = slots // block_size, slots % block_size",
                "blocks, offsets = slots % block_size, slots // block_size",
            )
        ],
        ["write_kv(k, v, k_cache, v_cache, slot_mapping=", "expected"],
    ),
    "scores not scaled": (
        {"2": "wrong", "3": "wrong"},
        [
            (
                "((k[:, h // group] @ q[s, h].float()) * scale)",
                "(k[:, h // group] @ q[s, h].float())",
            )
        ],
        ["differs from minirt's reference by up to"],
    ),
    "query heads mapped to KV heads round-robin": (
        {"2": "wrong", "3": "wrong"},
        [("k[:, h // group]", "k[:, h % kv_heads]"), ("v[:, h // group]", "v[:, h % kv_heads]")],
        ["differs from minirt's reference", "query heads on"],
    ),
    "the whole table read, garbage masked by multiplying": (
        {"2": "wrong", "3": "wrong"},  # the engine's pool, too, holds garbage past a context
        [
            (
                "        pos = torch.arange(n)\n",
                "        pos = torch.arange(block_tables.shape[1] * block_size)\n",
            ),
            (
                "            probs = ((k[:, h // group] @ q[s, h].float()) * scale).softmax(-1)",
                "            scores = (k[:, h // group] @ q[s, h].float()) * scale\n"
                "            probs = scores.softmax(-1) * (pos < n)\n"
                "            probs = probs / probs.sum()",
            ),
        ],
        ["is NaN", "0 * NaN is NaN"],
    ),
}


@pytest.mark.parametrize("bug", BUGS)
def test_a_planted_bug_loses_its_tasks_with_partial_credit_and_says_why(bug, tmp_path):
    costs, edits, says = BUGS[bug]
    results = grade_in_process(planted(tmp_path, *edits))
    lost = {t: r.status for t, r in results.items() if r.status != "passed"}
    assert lost == costs, {t: r.message[:300] for t, r in results.items()}
    first = results[min(costs)]
    assert all(fragment in first.message for fragment in says), first.message
    total = sum(r.score for r in results.values())
    assert 0 < total < sum(r.points for r in results.values())  # partial credit


def test_the_engine_task_names_the_step_and_layer_that_differ(tmp_path):
    edits = [
        ("((k[:, h // group] @ q[s, h].float()) * scale)", "(k[:, h // group] @ q[s, h].float())")
    ]
    message = grade_in_process(planted(tmp_path, *edits))["3"].message
    assert "step 1, layer 0: the decode of" in message, message


# -- the Triton rungs, in Triton's interpreter --------------------------------------------------
TRITON_BUGS = {  # a planted bug -> (its task, edits, what its message says[, "all"]: every case
    # fails; else the cases it cannot see pass)
    "a tail stored without its mask": (
        "4a",
        [
            (
                "tl.store(out_ptr + row * out_stride + cols, x * alpha, mask=ok)",
                "tl.store(out_ptr + row * out_stride + cols, x * alpha)",
            )
        ],
        "wrote past the end of row",
    ),
    "the padding of a softmax row loaded as 0": (
        "4b",
        [
            (
                'x = tl.load(x_ptr + row * x_stride + cols, mask=ok, other=float("-inf"))'
                ".to(tl.float32)",
                "x = tl.load(x_ptr + row * x_stride + cols, mask=ok, other=0.0).to(tl.float32)",
            )
        ],
        "softmax_rows(x) on",
    ),
    "an online softmax that forgets to rescale the running sum": (
        "4c",
        [("l = l * tl.exp(m - m_new) + ", "l = l + ")],
        "tiles of 8",
    ),
    "a causal mask off by one on the diagonal": (
        "4d",
        [("(n[None, :] <= q_pos[:, None])", "(n[None, :] < q_pos[:, None])")],
        "it sees keys 0 …",
        "all",  # every sequence has a query that sees its own key only, or one key too few
    ),
    "the same mask, in the engine": (
        "5",
        [("(n[None, :] <= q_pos[:, None])", "(n[None, :] < q_pos[:, None])")],
        "step 0, layer 0: the prefill of",  # the first call that differs, found inside the run
        "all",
    ),
    "split-K partials combined without the max correction": (
        "4e",
        [("    w = tl.exp(m - m_all)", "    w = tl.where(m > float('-inf'), 1.0, 0.0)")],
        "differs from minirt's reference",
    ),
    "a PyTorch fallback instead of the split kernels": (
        "4e",
        [
            (
                "    decode_split_kernel[(num_seqs, num_heads, splits)](",
                "    return paged_decode(q, k_cache, v_cache, block_tables, context_lens, scale,\n"
                "                        max_context_len)\n"
                "    decode_split_kernel[(num_seqs, num_heads, splits)](",
            )
        ],
        "decode_split_kernel was never launched; the task grades your Triton kernel, not a "
        "PyTorch fallback",
        "all",
    ),
    "torch's softmax instead of the kernel": (
        "4b",
        [
            (
                "    out = torch.empty_like(x)\n    softmax_kernel",
                "    return x.softmax(-1)\n    softmax_kernel",
            )
        ],
        "softmax_kernel was never launched",
        "all",
    ),
}

GRADE_IN_THE_INTERPRETER = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from minirt.grading import lab08, run_task
from tests.labs.common import cells_into_namespace
results = {}
for name, path, task_id in json.loads(sys.argv[1]):
    task = next(t for t in lab08.TASKS if t.id == task_id)
    results[name] = run_task(task, cells_into_namespace(Path(path)), seed=0).to_dict()
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> dict:
    """{bug: the TaskResult (a dict) of its task}, every bug graded in one fresh interpreter."""
    jobs = []
    for k, (bug, (task, edits, *_)) in enumerate(TRITON_BUGS.items()):
        path = planted(tmp_path_factory.mktemp(f"bug{k}"), *edits)
        jobs.append([bug, str(path), task])
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-c", GRADE_IN_THE_INTERPRETER, json.dumps(jobs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("bug", TRITON_BUGS)
def test_a_planted_triton_bug_loses_its_rungs_cases_and_says_why(bug, interpreted):
    task, _, says, *every = TRITON_BUGS[bug]
    result = interpreted[bug]
    assert result["task_id"] == task and result["status"] == "wrong", result
    assert says in result["message"], result["message"]
    passed = result["cases_passed"]
    assert passed == 0 if every else 0 < passed < result["num_cases"], result


def test_a_triton_rung_refuses_a_kernel_that_is_not_triton():
    task = next(t for t in lab08.TASKS if t.id == "4b")
    softmax_rows = lambda x: x.softmax(-1)  # noqa: E731
    namespace = {"softmax_kernel": softmax_rows, "softmax_rows": softmax_rows}
    result = run_task(task, namespace, seed=0)
    assert result.status == "wrong" and "must be a @triton.jit kernel" in result.message


# -- on a GPU: the kernels timed against minirt's (informational) ------------------------------
TIMING = [sys.executable, "-m", "minirt.grading.lab08_timing", str(SOURCE)]


def test_timing_without_a_gpu_says_so_and_does_nothing():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TRITON_INTERPRET": "1"}
    proc = subprocess.run(TIMING, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0 and "no CUDA GPU here" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.gpu
def test_on_a_gpu_the_solution_kernels_are_timed_against_minirts_and_agree():
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # as the notebook leaves it: compiled anew
    proc = subprocess.run(TIMING, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if "ratio" in line]
    assert [r[0] for r in rows] == ["prefill", "decode"], proc.stdout
    assert all(float(r[-1]) < 0.05 for r in rows), proc.stdout  # float16 sums, another order


# -- cheats -------------------------------------------------------------------------------------
DECODE = "    num_seqs, num_heads, head_dim = q.shape\n    block_size, kv_heads"
PREFILL = "    num_tokens, num_heads, head_dim = q.shape\n    q = q.contiguous()"
CHEATS = {  # how a notebook cheats -> (edits, what the refusal names)
    "delegates to minirt's reference": (
        [
            (
                DECODE,
                "    from minirt.kernels.decode_attention import decode_attention_ref\n"
                "    return decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens,"
                " scale, max_context_len)\n" + DECODE,
            )
        ],
        "`from minirt.kernels.decode_attention import decode_attention_ref`",
    ),
    "launches minirt's prefill kernel": (
        [
            (
                PREFILL,
                "    from minirt.kernels.prefill_attention import prefill_attention\n" + PREFILL,
            )
        ],
        "`from minirt.kernels.prefill_attention import prefill_attention`",
    ),
    "uses torch's attention": (
        [
            (
                DECODE,
                "    from torch.nn.functional import scaled_dot_product_attention\n" + DECODE,
            )
        ],
        "scaled_dot_product_attention",
    ),
    "takes the engine's own kernels": (
        [(DECODE, "    theirs = LLM(device='cpu').kernels\n" + DECODE)],
        "the attribute `.kernels`",
    ),
    "reaches the grader": (
        [(DECODE, "    import minirt.grading.lab08\n" + DECODE)],
        "reaches the grader",
    ),
}


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_cheating_notebook_scores_zero_and_is_told_where(cheat, tmp_path):
    edits, says = CHEATS[cheat]
    report = grade_notebook(planted(tmp_path, *edits), seed=0, timeout=60)
    assert report.score == 0
    assert {r.status for r in report.results} == {"refused"}
    message = report.results[0].message
    assert says in message and "refused" in message, message


@pytest.fixture
def torch_tasks_only(monkeypatch):
    """The grader with lab 8's tasks 1 and 2 only (their workers fork from this process): the
    checks below are about the guard, not the kernels."""
    monkeypatch.setattr(lab08, "TASKS", [t for t in lab08.TASKS if t.id in ("1", "2")])


def test_the_reference_reached_by_a_computed_key_is_refused_by_its_object(
    tmp_path, torch_tasks_only
):
    hidden = (
        "_backend = LLM(device='cpu').__dict__['ker' + 'nels']\n"
        "_theirs = vars(_backend)['decode_' + 'attention']\n\n\n"
        "def paged_decode(q, k_cache, v_cache, block_tables, context_lens, scale,\n"
        "                 max_context_len, num_splits=None):\n"
        "    return _theirs(q, k_cache, v_cache, block_tables, context_lens, scale,\n"
        "                   max_context_len)\n"
    )
    nb = nbformat.read(SOURCE, as_version=4)
    cell = next(c for c in nb.cells if "def paged_decode(" in c.source)
    cell.source = hidden
    path = tmp_path / SOURCE.name
    nbformat.write(nb, path)
    report = grade_notebook(path, seed=0, timeout=60)
    by_id = {r.task_id: r for r in report.results}
    assert by_id["2"].status == "refused" and by_id["2"].score == 0
    assert "(from minirt.kernels." in by_id["2"].message, by_id["2"].message  # the CPU path's


def test_an_author_cell_the_learner_edited_keeps_the_authors_imports(tmp_path, torch_tasks_only):
    """The first cell imports minirt's backend (to build the learner's); a learner who adds an
    import there is not refused for the author's line, only for lines of their own."""
    first = "from minirt.kernels.backend import TORCH\n"
    added = planted(tmp_path, (first, first + "import math\n"))
    report = grade_notebook(added, seed=0, timeout=120)
    assert report.full_marks, report.table()
    cheat = planted(tmp_path, (first, first + "from minirt.kernels import store_kv\n"))
    refused = grade_notebook(cheat, seed=0, timeout=60)
    assert (
        refused.score == 0 and "`from minirt.kernels import store_kv`" in refused.results[0].message
    )
