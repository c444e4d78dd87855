"""Labs 2, 4 and 5 refuse the learner's code that hands minirt's graded part back as its own:
the copy model, the INT4 formats and kernel, the bank simulator and its swizzle, the grader's
reference schedules. Each cheat scores 0 on what it cheats, and the message names what it used."""

import linecache
from pathlib import Path

import nbformat
import pytest
import triton

from minirt.grading import grade_notebook, lab04, run_task

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "labs" / "source"


def planted(tmp_path, lab, *edits):
    """A copy of the lab's solution notebook with (old, new) source edits, each in one cell."""
    nb = nbformat.read(SOURCES / f"{lab}.ipynb", as_version=4)
    for old, new in edits:
        hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(hits) == 1, f"the solution changed: {old!r} is not in exactly one cell"
        hits[0].source = hits[0].source.replace(old, new)
    path = tmp_path / f"{lab}.ipynb"
    nbformat.write(nb, path)
    return path


PINNED = "    return latency_ms + ramp / (hw.ramp_gbps * 1e6) + (nbytes - ramp) / (link_gbps * 1e6)"
PAGEABLE = "    return hw.copy_latency_us / 1e3 + nbytes / (slow * 1e6) + chunk / (fast * 1e6)"
SWAP_IN = '    p = Program("prefetch: swap-in ahead of need")'

# name -> (lab, edits, the tasks refused (None: every task, by the source check), what it names)
CHEATS = {
    "lab 2: the copy model asked for the answer": (
        "lab02_swap_prefetch",
        [(PINNED, '    return hw.copy_ms(Op("h2d", "c", "copy", nbytes=nbytes))')],
        {"1a"},
        "Hardware.copy_ms",
    ),
    "lab 2: the copy model reached through the simulator": (
        "lab02_swap_prefetch",
        [
            (
                PAGEABLE,
                '    p = Program("one copy").h2d("c", nbytes, pinned=False)\n'
                '    return simulate(p, hw).of("c").ms',
            )
        ],
        {"1b"},
        "through simulate",
    ),
    "lab 2: the grader's reference schedule": (
        "lab02_swap_prefetch",
        [
            (
                SWAP_IN,
                "    from minirt.grading.lab02 import reference_swap_in\n"
                "    return reference_swap_in(num_steps, need_at, kv_bytes, step_ms, hw)\n"
                + SWAP_IN,
            )
        ],
        None,
        "minirt.grading.lab02",
    ),
    "lab 4: minirt's quantizer": (
        "lab04_quantization",
        [
            (
                "    out_f, in_f = w.shape\n    g = w.float().reshape(out_f, in_f // group_size, "
                "group_size)\n    scales = (g.abs().amax(-1) / 7)",
                "    q = F.quantize_int4(w, group_size)\n"
                "    return F.int4_codes(q), q.scales\n"
                "    out_f, in_f = w.shape\n    g = w.float().reshape(out_f, in_f // group_size, "
                "group_size)\n    scales = (g.abs().amax(-1) / 7)",
            )
        ],
        None,
        "quantize_int4",
    ),
    "lab 4: minirt's packing, imported": (
        "lab04_quantization",
        [
            (
                "    c = codes.to(torch.int64)",
                "    from minirt.quant.formats import pack_int4\n"
                "    return pack_int4(codes)\n    c = codes.to(torch.int64)",
            )
        ],
        None,
        "minirt.quant.formats",
    ),
    "lab 5: the simulator counts the wavefronts": (
        "lab05_bank_conflicts",
        [
            (
                "    words_in_bank = {}\n    for a in addresses:\n",
                "    return simulate(addresses, 4).wavefronts\n"
                "    words_in_bank = {}\n    for a in addresses:\n",
            )
        ],
        None,
        "simulate",
    ),
    "lab 5: minirt's swizzle as the layout": (
        "lab05_bank_conflicts",
        [
            (
                "    return (row * tile_cols + (col ^ (row % 32))) * 4",
                "    return swizzle(row * tile_cols + col, 5, 0, 5) * 4",
            )
        ],
        None,
        "swizzle",
    ),
}


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_notebook_using_minirts_graded_part_scores_0_where_it_does(cheat, tmp_path):
    lab, edits, tasks, names = CHEATS[cheat]
    report = grade_notebook(planted(tmp_path, lab, *edits), seed=0)
    refused = {r.task_id: r for r in report.results if r.status == "refused"}
    assert set(refused) == (tasks or {r.task_id for r in report.results})
    assert all(r.score == 0 for r in refused.values())
    assert all(r.status == "passed" for r in report.results if r.task_id not in refused)
    message = next(iter(refused.values())).message
    assert names in message and "refused" in message, message


KERNEL = """
import triton
import triton.language as tl

@triton.jit
def w4a16_gemv_kernel(x_ptr, y_ptr, N: tl.constexpr):
    tl.store(y_ptr + tl.arange(0, N), tl.load(x_ptr + tl.arange(0, N)))

def w4a16_gemv(x, packed, scales, zeros, group_size):  # the answer in PyTorch, no launch
    codes = (packed[..., None] >> torch.arange(0, 32, 4, dtype=torch.int32)) & 0xF
    codes = codes.reshape(packed.shape[0], -1).float()
    codes = codes.reshape(codes.shape[0], -1, group_size)
    zero = 8.0 if zeros is None else zeros.float()[..., None]
    w = ((codes - zero) * scales[..., None]).reshape(packed.shape[0], -1)
    return w @ x.float()
"""


def test_lab04_kernel_task_fails_a_launcher_that_never_launches_its_kernel():
    namespace = {"__name__": "__main__", "torch": __import__("torch")}
    linecache.cache["<cell 20>"] = (len(KERNEL), None, KERNEL.splitlines(True), "<cell 20>")
    exec(compile(KERNEL, "<cell 20>", "exec"), namespace)
    kernel = namespace["w4a16_gemv_kernel"]
    assert isinstance(kernel, triton.runtime.jit.KernelInterface)
    task = next(t for t in lab04.TASKS if t.id == "4")
    result = run_task(task, namespace, seed=0)
    assert result.score == 0 and result.status == "wrong"
    assert "w4a16_gemv_kernel was never launched" in result.message
    assert namespace["w4a16_gemv_kernel"] is kernel  # the counting wrapper is taken out again


def test_a_saved_reference_to_the_copy_model_is_refused_through_the_learners_helper(tmp_path):
    saved = "_copy_model = Hardware.copy_ms\n\n\ndef pinned_copy_ms("
    edits = [
        ("def pinned_copy_ms(", saved),
        (PINNED, '    return _copy_model(hw, Op("h2d", "c", "copy", nbytes=nbytes))'),
    ]
    report = grade_notebook(planted(tmp_path, "lab02_swap_prefetch", *edits), seed=0)
    statuses = {r.task_id: r.status for r in report.results}
    assert statuses == {"1a": "refused", "1b": "refused", "2": "passed", "3": "passed"}
    message = report.results[0].message
    assert "copy_time_ms (through pinned_copy_ms) uses `_copy_model`" in message, message
