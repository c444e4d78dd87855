"""Lab 8 (labs/lab08_paged_attention.ipynb): attention from the kernel's side — write a step's
K/V into the paged pool, attend one query per sequence through the block table, plugged into the
engine as `LLM(kernel_backend=...)`; then the FlashAttention ladder in Triton, up to the kernels
that serve as the engine's attention.

Task 1 compares `write_kv` with `store_kv_ref` on random pools (whole pools, NaN for slots never
written, -1 slots that store nothing). Task 2 compares `paged_decode` with `decode_attention_ref`
on random shapes: GQA groups, scattered block tables with padding entries, empty padding rows,
NaN in every slot past a context. Task 3 runs the engine with both as its kernels
(minirt.grading.lab08_engine). Tasks 4a-4e are the Triton rungs, in Triton's interpreter
(minirt.grading.lab08_triton); task 5 runs the engine on the learner's prefill and decode kernels
there. Every task is played in the worker and judged in the parent (draw/play/expect/compare).
"""

from __future__ import annotations

import random
from functools import partial
from types import SimpleNamespace

import torch

from minirt.grading import lab08_engine as engine
from minirt.grading import lab08_triton as rungs
from minirt.grading.core import Mismatch, Task
from minirt.grading.guard import Forbidden
from minirt.grading.lab08_pools import (
    close,
    decode_args,
    describe_pool,
    draw_pool,
    pool_size,
)

FORBIDDEN = Forbidden(
    modules=("minirt.kernels",),
    names=(
        "store_kv",
        "store_kv_ref",
        "decode_attention",
        "decode_attention_ref",
        "paged_attention_ref",
        "prefill_attention",
        "prefill_attention_ref",
        "paged_kv_offsets",
        "TORCH",
        "TRITON",
        "BACKENDS",
        "get_backend",
        "scaled_dot_product_attention",  # torch's own attention: the learner writes the softmax
    ),
    what="minirt's attention kernels (and torch's)",
)


# -- task 1: write_kv -----------------------------------------------------------------------------
def draw_write(rng: random.Random, i: int) -> dict:
    kv_heads, head_dim, bs = rng.choice((1, 2, 4)), rng.choice((4, 8, 64)), rng.choice((1, 4, 16))
    num_blocks = rng.randint(1, 8)
    n = rng.randint(1, min(12, num_blocks * bs))
    slots = rng.sample(range(num_blocks * bs), n)
    if i % 3 == 1:  # padding rows store nothing (a CUDA graph pads its batch with them)
        for j in rng.sample(range(n), rng.randint(1, n)):
            slots[j] = -1
    return {
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "block_size": bs,
        "num_blocks": num_blocks,
        "slots": slots,
        "dtype": ("float32", "bfloat16")[i % 4 == 3],
        "filled": bool(i % 2),  # a pool with other sequences' KV already in it
        "seed": rng.randrange(2**31),
    }


def _write_tensors(case: dict) -> tuple:
    g = torch.Generator().manual_seed(case["seed"])
    n, dtype = len(case["slots"]), getattr(torch, case["dtype"])
    k = torch.randn(n, case["kv_heads"], case["head_dim"], generator=g)
    v = torch.randn(n, case["kv_heads"], case["head_dim"], generator=g)
    shape = (case["num_blocks"], case["block_size"], case["kv_heads"], case["head_dim"])
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    if case["filled"]:
        k_cache[:] = torch.randn(shape, generator=g).to(dtype)
        v_cache[:] = torch.randn(shape, generator=g).to(dtype)
    return k, v, k_cache, v_cache, torch.tensor(case["slots"], dtype=torch.int64)


def play_write(learner: SimpleNamespace, case: dict) -> dict:
    k, v, k_cache, v_cache, mapping = _write_tensors(case)
    learner.write_kv(k, v, k_cache, v_cache, mapping)
    return {"k_cache": k_cache, "v_cache": v_cache}


def expect_write(case: dict) -> dict:
    from minirt.kernels.store_kv import store_kv_ref

    k, v, k_cache, v_cache, mapping = _write_tensors(case)
    store_kv_ref(k, v, k_cache, v_cache, mapping)
    return {"k_cache": k_cache, "v_cache": v_cache}


def compare_write(got: dict, want: dict, case: dict) -> None:
    slots, bs, n = case["slots"], case["block_size"], len(case["slots"])
    call = (
        f"write_kv(k, v, k_cache, v_cache, slot_mapping={slots}) with {n} tokens, "
        f"{case['kv_heads']} KV heads of {case['head_dim']}, a pool of {case['num_blocks']} "
        f"blocks of {bs} ({case['dtype']})"
    )
    for name in ("k_cache", "v_cache"):
        mine, ref = got[name], want[name]
        if not isinstance(mine, torch.Tensor) or mine.shape != ref.shape:
            raise Mismatch(f"{call}: the {name} you were given changed its shape or type", n)
        same = (mine == ref) | (mine.isnan() & ref.isnan())
        if not same.all():
            b, off, h = (int(x) for x in (~same).nonzero()[0][:3])
            slot = b * bs + off
            who = [j for j, s in enumerate(slots) if s == slot]
            why = (
                f"token {who[0]} goes to slot {slot} = block {b}, offset {off}"
                if who
                else "no token goes to that slot: leave it as it was"
            )
            raise Mismatch(
                f"{call}: {name}[{b}, {off}, {h}] is {mine[b, off, h, :3].tolist()}…, expected "
                f"{ref[b, off, h, :3].tolist()}… ({why}; -1 stores nothing; write into the pool "
                "you were given, in place)",
                n,
            )


# -- task 2: paged_decode -------------------------------------------------------------------------
def play_decode(learner: SimpleNamespace, case: dict) -> torch.Tensor:
    return learner.paged_decode(*decode_args(case))


def expect_decode(case: dict) -> torch.Tensor:
    from minirt.kernels.decode_attention import decode_attention_ref

    return decode_attention_ref(*decode_args(case))


def compare_decode(got, want: torch.Tensor, case: dict) -> None:
    close(got, want, f"paged_decode(...) on {describe_pool(case)}", pool_size(case))


# -- task 3: write_kv and paged_decode in the engine ----------------------------------------------
def play_engine(learner: SimpleNamespace, case: dict) -> dict:
    roles = {"store_kv": learner.write_kv, "decode_attention": learner.paged_decode}
    return engine.run(roles, case)


# -- task 5: the Triton kernels in the engine -----------------------------------------------------
ENGINE_ROLES = ("store_kv", "prefill_attention", "decode_attention")


def draw_triton_engine(rng: random.Random, i: int) -> dict:
    return engine.draw(rng, i, small=True)


def play_triton_engine(learner: SimpleNamespace, case: dict) -> dict:
    roles = {
        "store_kv": learner.write_kv,
        "prefill_attention": learner.prefill_triton,
        "decode_attention": learner.paged_decode_triton,
    }
    run = partial(engine.run, roles, case)
    kernels = (*rungs.PREFILL, *rungs.DECODE)
    record, launches = rungs.launched(learner, "paged_decode_triton", kernels, run)
    rungs.check_launches(launches, f"{engine.about(case)}, in the engine", engine.size(case))
    return record


def compare_triton_engine(got: dict, want: dict, case: dict) -> None:
    engine.compare(got, want, case, roles=ENGINE_ROLES)


INTERPRET = (("TRITON_INTERPRET", "1"),)
TRITON_KERNELS = ("prefill_kernel", "decode_split_kernel", "decode_combine_kernel")
ENGINE = (engine.draw, play_engine, engine.expect, engine.compare)
TRITON_ENGINE = (draw_triton_engine, play_triton_engine, engine.expect, compare_triton_engine)
TASKS = [
    Task.played(
        "1", "write_kv", 2, ("write_kv",), 30, (draw_write, play_write, expect_write, compare_write)
    ),
    Task.played(
        "2",
        "paged_decode",
        3,
        ("paged_decode",),
        40,
        (draw_pool, play_decode, expect_decode, compare_decode),
    ),
    Task.played("3", "your kernels in the engine", 3, ("write_kv", "paged_decode"), 4, ENGINE),
    Task.played(
        "4a",
        "scale_rows_kernel: load, store, a masked tail",
        1,
        ("scale_rows_kernel", "scale_rows"),
        8,
        rungs.SCALE,
        INTERPRET,
    ),
    Task.played(
        "4b",
        "softmax_kernel: a row softmax",
        1,
        ("softmax_kernel", "softmax_rows"),
        8,
        rungs.SOFTMAX,
        INTERPRET,
    ),
    Task.played(
        "4c",
        "online_softmax_kernel: a long row, tile by tile",
        2,
        ("online_softmax_kernel", "softmax_tiled"),
        8,
        rungs.ONLINE,
        INTERPRET,
    ),
    Task.played(
        "4d",
        "prefill_kernel: tiled causal attention",
        3,
        ("prefill_kernel", "prefill_triton"),
        8,
        rungs.PREFILL_TASK,
        INTERPRET,
    ),
    Task.played(
        "4e",
        "decode kernels: paged attention split along the context",
        3,
        (*rungs.DECODE, "paged_decode_triton"),
        10,
        rungs.DECODE_TASK,
        INTERPRET,
    ),
    Task.played(
        "5",
        "your Triton kernels in the engine",
        2,
        ("write_kv", "prefill_triton", "paged_decode_triton", *TRITON_KERNELS),
        1,
        TRITON_ENGINE,
        INTERPRET,
        seconds=120,  # the engine in Triton's interpreter
    ),
]
