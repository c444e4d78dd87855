"""Lab 8 on a GPU: the learner's Triton attention timed against minirt's (informational only).

`python -m minirt.grading.lab08_timing labs/lab08_paged_attention.ipynb` runs the notebook's code
cells (as the grader does) with Triton compiling for the GPU instead of interpreting, checks the
learner's prefill and decode launchers against minirt's Triton kernels on one serving-sized batch
each, and times both sides (`triton.testing.do_bench`); the ratio is theirs over minirt's. Without
a CUDA GPU it says so and does nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

# One serving-sized batch per kernel: Qwen3-0.6B's attention shape (16 query heads on 8 KV heads
# of 128), blocks of 16, float16; a prefill of 4 prompts of 256 tokens, a decode step of 32
# sequences with 1,024 tokens of context each.
HEADS, KV_HEADS, HEAD_DIM, BLOCK_SIZE = 16, 8, 128, 16
PREFILL_SEQS, PREFILL_LEN = 4, 256
DECODE_SEQS, DECODE_CONTEXT = 32, 1024


def _batch(num_seqs: int, context: int, queries: int):
    """A pool holding `num_seqs` contexts of `context` tokens in scattered blocks, and `queries`
    new queries per sequence (its last tokens)."""
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    blocks = context // BLOCK_SIZE
    ids = torch.randperm(num_seqs * blocks, generator=g, device="cuda").to(torch.int32)
    shape = (num_seqs * blocks, BLOCK_SIZE, KV_HEADS, HEAD_DIM)
    kw = dict(device="cuda", dtype=torch.float16, generator=g)
    return {
        "q": torch.randn(num_seqs * queries, HEADS, HEAD_DIM, **kw),
        "k_cache": torch.randn(shape, **kw),
        "v_cache": torch.randn(shape, **kw),
        "block_tables": ids.view(num_seqs, blocks),
        "context_lens": torch.full((num_seqs,), context, dtype=torch.int32, device="cuda"),
        "query_start_loc": torch.arange(0, num_seqs * queries + 1, queries, device="cuda").int(),
    }


def time_kernels(namespace: dict) -> list[dict]:
    """[{kernel, yours_ms, minirt_ms, ratio, max_error}] for the notebook's prefill_triton and
    paged_decode_triton against minirt's prefill_attention and decode_attention."""
    from triton.testing import do_bench

    from minirt.kernels.decode_attention import decode_attention
    from minirt.kernels.prefill_attention import prefill_attention

    scale = HEAD_DIM**-0.5
    p = _batch(PREFILL_SEQS, PREFILL_LEN, PREFILL_LEN)
    pool = (p["k_cache"], p["v_cache"], p["block_tables"], p["context_lens"])
    prefill_args = (p["q"], *pool, p["query_start_loc"], scale, PREFILL_LEN, PREFILL_LEN)
    d = _batch(DECODE_SEQS, DECODE_CONTEXT, 1)
    pool = (d["k_cache"], d["v_cache"], d["block_tables"], d["context_lens"])
    decode_args = (d["q"], *pool, scale, DECODE_CONTEXT)
    sides = [
        ("prefill", namespace["prefill_triton"], prefill_attention, prefill_args),
        ("decode", namespace["paged_decode_triton"], decode_attention, decode_args),
    ]
    rows = []
    for kernel, yours, minirt, args in sides:
        error = (yours(*args).float() - minirt(*args).float()).abs().max().item()
        mine = do_bench(lambda f=yours, a=args: f(*a))
        theirs = do_bench(lambda f=minirt, a=args: f(*a))
        row = {"kernel": kernel, "yours_ms": mine, "minirt_ms": theirs, "ratio": mine / theirs}
        rows.append({**row, "max_error": error})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("0", ""):  # Triton must compile: anew
        env = {**os.environ, "TRITON_INTERPRET": "0"}
        cmd = [sys.executable, "-m", "minirt.grading.lab08_timing", str(args.notebook)]
        return subprocess.run(cmd, env=env).returncode
    os.environ["TRITON_INTERPRET"] = "0"  # the notebook's first cell would turn it on
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to time (the grader's tasks run in Triton's interpreter)")
        return 0
    namespace = _run_cells(args.notebook)
    print(f"on {torch.cuda.get_device_name()}, float16, {HEADS} heads on {KV_HEADS} KV heads")
    for row in time_kernels(namespace):
        print(
            f"{row['kernel']:8} yours {row['yours_ms']:8.3f} ms   minirt {row['minirt_ms']:8.3f} "
            f"ms   ratio {row['ratio']:6.2f}   largest difference {row['max_error']:.3g}"
        )
    return 0


def _run_cells(path: Path) -> dict:
    """The notebook's code cells (not its self-checks and demos), run into one namespace."""
    import linecache

    from minirt.grading.runner import notebook_cells

    namespace: dict = {"__name__": "__main__"}
    for number, source in notebook_cells(path):
        name = f"<cell {number}>"  # in linecache: @triton.jit reads a kernel's source
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        exec(compile(source, name, "exec"), namespace)
    return namespace


if __name__ == "__main__":
    sys.exit(main())
