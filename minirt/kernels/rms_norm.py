"""rms_norm: x / rms(x) * weight, optionally fused with the residual add before it.

A decoder layer does "add the residual, then normalise" twice; fused, the sum is read once and
both results (the normalised activations and the new residual stream) are written in one pass.
The statistics are fp32 whatever the dtype, as in Hugging Face `transformers`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minirt.kernels.pdl import launch_args, pdl_wait


def rms_norm_ref(
    x: torch.Tensor,  # [..., dim]
    weight: torch.Tensor,  # [dim]
    eps: float,
    residual: torch.Tensor | None = None,  # like x
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """norm(x); with `residual`: (norm(x + residual), x + residual)."""
    if residual is not None:
        x = x + residual  # in the activation dtype, as transformers adds
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    out = weight * h.to(dtype)
    return out if residual is None else (out, x)


@triton.jit
def normalize(x, w, eps, DIM: tl.constexpr):
    """x / rms(x) * w for one row held in registers (padding lanes zero): the statistics in
    fp32, rounded to x's dtype before the weight, as the reference does. Shared with the GEMV
    that normalises its own input (minirt.kernels.gemv)."""
    h = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=0) / DIM + eps)
    return (h * rstd).to(x.dtype).to(w.dtype) * w


@triton.jit
def _rms_norm_kernel(
    x_ptr, res_ptr, out_ptr, new_res_ptr, w_ptr, eps,
    DIM: tl.constexpr, BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr, PDL: tl.constexpr = 0,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)  # one program per row: the whole row fits in registers
    cols = tl.arange(0, BLOCK)
    mask = cols < DIM
    w = tl.load(w_ptr + cols, mask=mask)  # a weight: no kernel before writes it
    pdl_wait(PDL)  # minirt.kernels.pdl
    x = tl.load(x_ptr + row * DIM + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        x = x + tl.load(res_ptr + row * DIM + cols, mask=mask, other=0.0)
        tl.store(new_res_ptr + row * DIM + cols, x, mask=mask)
    y = normalize(x, w, eps, DIM)
    tl.store(out_ptr + row * DIM + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of `rms_norm_ref`."""
    dim = x.shape[-1]
    x2 = x.reshape(-1, dim).contiguous()  # q/k-norm passes [tokens, heads, head_dim]: rows
    out_dtype = torch.promote_types(x.dtype, weight.dtype)
    out = torch.empty(x2.shape, dtype=out_dtype, device=x.device)
    if residual is not None:
        res = residual.reshape(-1, dim).contiguous()
        new_res = torch.empty_like(x2)
    else:
        res = new_res = x2  # unused
    if x2.shape[0]:
        _rms_norm_kernel[(x2.shape[0],)](
            x2, res, out, new_res, weight, eps,
            DIM=dim, BLOCK=triton.next_power_of_2(dim), HAS_RESIDUAL=residual is not None,
            **launch_args(x2),
        )  # fmt: skip
    out = out.view(x.shape)
    return out if residual is None else (out, new_res.view(x.shape))
