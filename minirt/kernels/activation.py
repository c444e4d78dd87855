"""silu_mul: SwiGLU's elementwise half, silu(gate) * up, in one pass over memory.

Unfused, PyTorch reads gate, writes silu(gate), reads it back with up and writes the product:
four tensor-sized trips through HBM where one kernel needs three. Notebook 05 (profiling) counts
the launches and bytes this saves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from minirt.kernels.pdl import launch_args, pdl_wait


def silu_mul_ref(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up  # [num_tokens, intermediate]


@triton.jit
def silu_times(gate, up):
    """silu(gate) * up as the reference rounds it: the sigmoid in fp32, silu rounded to up's
    dtype before the product (F.silu's output). Shared with the down projection's GEMV."""
    g = gate.to(tl.float32)
    return (g / (1.0 + tl.exp(-g))).to(up.dtype) * up


@triton.jit
def _silu_mul_kernel(gate_ptr, up_ptr, out_ptr, gate_stride, up_stride, n, BLOCK: tl.constexpr,
                     PDL: tl.constexpr = 0):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)  # one row per program along axis 0, BLOCK columns each
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n
    pdl_wait(PDL)  # minirt.kernels.pdl: gate and up are the kernel before's
    g = tl.load(gate_ptr + row * gate_stride + cols, mask=mask)
    u = tl.load(up_ptr + row * up_stride + cols, mask=mask)
    tl.store(out_ptr + row * n + cols, silu_times(g, u), mask=mask)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Triton twin of `silu_mul_ref`. gate and up may be the two halves (views) of one packed
    gate_up projection: rows are strided, columns must be contiguous."""
    if gate.stride(-1) != 1 or up.stride(-1) != 1:
        gate, up = gate.contiguous(), up.contiguous()
    rows, n = gate.shape
    out = torch.empty(rows, n, dtype=up.dtype, device=up.device)
    block = min(1024, triton.next_power_of_2(n))
    if rows and n:
        _silu_mul_kernel[(rows, triton.cdiv(n, block))](
            gate, up, out, gate.stride(0), up.stride(0), n, BLOCK=block, **launch_args(up)
        )
    return out
