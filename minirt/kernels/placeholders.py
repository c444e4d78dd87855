"""A decode step's inputs on the device: the overlapped loop's placeholders resolved, the block
tables unpacked, in one launch.

The overlapped loop (minirt.engine.overlap) launches step n + 1 before it has read step n's
tokens: an input id -(i + 1) stands for row i of the last step's tokens, still on the device.
Written with PyTorch's operators (`resolve_ref`) that is six small kernels (compare, negate,
subtract, clamp, gather, select) and a copy into the CUDA graph's input, all between two
replays; one Triton program does it in place. On the H100 the batch-1 step went from 0.781 to
0.758 ms with it (`docs/measurements/decode-now-h100-20261207.json`).

A captured decode step (minirt.engine.cuda_graph) reads its block tables at fixed addresses, one
row of `max_blocks_per_seq` entries a sequence, while a step has only `width` of them a row: a
copy of the short rows into the long ones is a copy to a strided destination (PyTorch stages it
and launches a copy kernel). So the host packs the step's ids, positions, slots, context lengths
and short table rows into one buffer, one copy takes it to the device, and `unpack` resolves the
ids and spreads the rows in one launch.
"""

from __future__ import annotations

import os

import numpy as np
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


def pack(
    columns: list[list[int]],
    tables: list[list[int]],
    size: int | None = None,
    fills: list[int] | None = None,
) -> tuple[int, torch.Tensor]:
    """(width, one int64 host tensor): the columns one after another (each padded to `size`
    entries with its fill, or as long as it is), then the block tables' rows, each padded with
    -1 to the widest (`width` entries): what one copy takes to the device. Filled through numpy
    slices: at batch 256 with 1,000-token contexts, a Python list of those ~30,000 ints through
    torch.tensor took 1.8 ms of host time a step; this takes 0.3."""
    lens = [len(c) if size is None else size for c in columns]
    width = max((len(t) for t in tables), default=0)
    out = np.empty(sum(lens) + len(tables) * width, dtype=np.int64)
    at = 0
    for column, n, fill in zip(columns, lens, fills or [0] * len(columns), strict=True):
        out[at : at + len(column)] = column
        out[at + len(column) : at + n] = fill
        at += n
    rows = out[at:].reshape(len(tables), width)
    rows.fill(-1)
    for row, table in zip(rows, tables, strict=True):
        row[: len(table)] = table
    return width, torch.from_numpy(out)


def unpack_ref(staged, prev, tables, n: int, width: int, bs: int) -> None:
    """staged [4 * bs + n * width] int64 on the device: ids, positions, slots, context lengths
    (bs each, the graph's inputs in place), then n table rows of `width` entries. The first n
    ids resolved against `prev` (None: no placeholders), the rows into tables[:n, :width]."""
    if prev is not None:
        resolve_ref(staged[:n], prev, out=staged[:n])
    tables[:n, :width] = staged[4 * bs : 4 * bs + n * width].view(n, width)


TABLE_BLOCK = 128  # table entries a program


@triton.jit(do_not_specialize=["width", "bs", "stride_t"])
def _unpack_kernel(staged_ptr, prev_ptr, tables_ptr, width, bs, stride_t, HAS_PREV: tl.constexpr,
                   BLOCK: tl.constexpr):  # fmt: skip
    r = tl.program_id(0)  # a row of the batch: its id (one program), BLOCK of its table entries
    if HAS_PREV and tl.program_id(1) == 0:
        tok = tl.load(staged_ptr + r)
        held = tok < 0
        prev = tl.load(prev_ptr + tl.where(held, -tok - 1, 0), mask=held, other=0)
        tl.store(staged_ptr + r, tl.where(held, prev, tok))
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    row = tl.load(staged_ptr + 4 * bs + r * width + c, mask=c < width)
    tl.store(tables_ptr + r * stride_t + c, row, mask=c < width)


def unpack(staged, prev, tables, n: int, width: int, bs: int) -> None:
    """Triton twin of `unpack_ref`, one launch (a GPU, or Triton's interpreter)."""
    if not staged.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        return unpack_ref(staged, prev, tables, n, width, bs)
    grid = (n, triton.cdiv(width, TABLE_BLOCK))
    src = prev.contiguous() if prev is not None else staged  # never read without placeholders
    _unpack_kernel[grid](staged, src, tables, width, bs, tables.stride(0),
                         HAS_PREV=prev is not None, BLOCK=TABLE_BLOCK)  # fmt: skip
