"""Lab 8's grader, graded as a student would be: a wrong kernel loses the tasks that see it, with
partial credit and a message that names the fault (the step and layer, inside the engine); a
PyTorch fallback for the Triton tier is caught by counting launches; a notebook that reaches
minirt's kernels, torch's attention or the grader scores 0; an author cell the learner edited
keeps the author's lines.

(Full marks for the solution and 0 for the untouched student notebook are in test_grading.py, for
every lab.) Planted bugs of tasks 1-3 run in this process; the Triton tier needs Triton's
interpreter from the start, so its bugs, and the cheats, go through `grade_notebook`.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from unittest import mock

import nbformat
import pytest

from minirt.grading import grade_notebook, lab08
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
        return run_in_process(path, lab08.TASKS, keep=lambda t: t.id != "4")


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


TRITON_BUGS = {  # the Triton tier, graded as the grader does it: in the interpreter
    "no rescale when the maximum grows": (
        [
            (
                "        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)",
                "        acc = acc + tl.sum(p[:, None] * v, axis=0)",
            )
        ],
        "differs from minirt's reference",
    ),
    "a PyTorch fallback instead of the kernel": (
        [
            (
                "    paged_decode_kernel[(num_seqs, num_heads)](",
                "    return paged_decode(q, k_cache, v_cache, block_tables, context_lens, scale,\n"
                "                        max_context_len)\n"
                "    paged_decode_kernel[(num_seqs, num_heads)](",
            )
        ],
        "paged_decode_kernel was never launched",
    ),
}


@pytest.mark.parametrize("bug", TRITON_BUGS)
def test_a_planted_triton_bug_loses_the_triton_tier_only(bug, tmp_path):
    edits, says = TRITON_BUGS[bug]
    report = grade_notebook(planted(tmp_path, *edits), seed=0, timeout=120)
    lost = {r.task_id: r for r in report.results if r.status != "passed"}
    assert set(lost) == {"4"} and lost["4"].status == "wrong", lost
    assert says in lost["4"].message, lost["4"].message
    assert 0 < report.score < report.points


DECODE = "    num_seqs, num_heads, head_dim = q.shape\n    block_size, kv_heads"
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


def test_the_reference_reached_by_a_computed_key_is_refused_by_its_object(tmp_path):
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


def test_an_author_cell_the_learner_edited_keeps_the_authors_imports(tmp_path):
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
