"""The overlapped loop's placeholders resolved on the device, in one launch.

The overlapped loop (minirt.engine.overlap) launches step n + 1 before it has read step n's
tokens: an input id -(i + 1) stands for row i of the last step's tokens, still on the device.
Written with PyTorch's operators (`resolve_ref`) that is six small kernels (compare, negate,
subtract, clamp, gather, select) and a copy into the CUDA graph's input, all between two
replays; one Triton program does it in place. On the H100 the batch-1 step went from 0.781 to
0.758 ms with it (`docs/measurements/decode-now-h100-20261207.json`).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def resolve_ref(ids: torch.Tensor, prev: torch.Tensor, out: torch.Tensor | None = None):
    """ids [n] int64 with each placeholder -(i + 1) replaced by prev[i], into `out` (may be ids
    itself; a new tensor when None)."""
    resolved = torch.where(ids < 0, prev[(-ids - 1).clamp(min=0)], ids)
    return resolved if out is None else out.copy_(resolved)


BLOCK = 128  # ids a program; one size, so one compile for every batch


@triton.jit(do_not_specialize=["n"])
def _resolve_kernel(ids_ptr, prev_ptr, out_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ids = tl.load(ids_ptr + i, mask=i < n, other=0)
    held = ids < 0  # a placeholder: the token of row -(id + 1) of the last step
    prev = tl.load(prev_ptr + tl.where(held, -ids - 1, 0), mask=(i < n) & held, other=0)
    tl.store(out_ptr + i, tl.where(held, prev, ids), mask=i < n)


def resolve(ids: torch.Tensor, prev: torch.Tensor, out: torch.Tensor | None = None):
    """Triton twin of `resolve_ref`: on a GPU, or under Triton's interpreter; the reference's
    operators on a CPU otherwise."""
    if not ids.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        return resolve_ref(ids, prev, out)
    out = torch.empty_like(ids) if out is None else out
    n = ids.numel()
    if n:
        _resolve_kernel[(triton.cdiv(n, BLOCK),)](ids, prev.contiguous(), out, n, BLOCK=BLOCK)
    return out
