"""grouped_gemm: many small GEMMs in one launch, one weight matrix per group of rows (MoE experts).

After routing, the rows bound for expert e sit together (rows `offsets[e]:offsets[e+1]` of `x`),
and each group is multiplied by its own weight `w[e]`. A loop of per-expert matmuls pays a launch
and a mostly-empty tile per expert (with 128 experts and 16 tokens, most groups hold 0 or 1
row); the Triton kernel walks every group's tiles in one grid. Notebook 12 measures both.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def _check(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> None:
    if x.dim() != 2 or w.dim() != 3:
        raise ValueError(
            f"grouped_gemm takes x [rows, K] and w [groups, K, N], got {tuple(x.shape)} and "
            f"{tuple(w.shape)}; pass a Linear-style [groups, N, K] weight as w.transpose(1, 2)"
        )
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} columns but each w[e] has {w.shape[1]} rows; they must match"
        )
    if offsets.shape != (w.shape[0] + 1,):
        raise ValueError(
            f"offsets must hold groups + 1 = {w.shape[0] + 1} row boundaries (0, ..., rows), "
            f"got shape {tuple(offsets.shape)}; build them with minirt.moe.sort_by_expert"
        )
    if x.dtype != w.dtype:
        raise ValueError(f"x is {x.dtype} but w is {w.dtype}; cast one so that both match")


def grouped_gemm_ref(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The spec: y[offsets[e]:offsets[e+1]] = x[same rows] @ w[e], fp32 sums, one rounding."""
    _check(x, w, offsets)
    y = torch.empty(x.shape[0], w.shape[2], dtype=x.dtype, device=x.device)  # [rows, N]
    bounds = offsets.tolist()  # a host sync: fine for the spec, not for a serving loop
    for e in range(w.shape[0]):
        lo, hi = bounds[e], bounds[e + 1]
        y[lo:hi] = (x[lo:hi].float() @ w[e].float()).to(x.dtype)
    return y


def grouped_gemm_loop(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """What a first implementation does: one library matmul per non-empty expert, in x's dtype
    (cuBLAS on a GPU). Correct, but a launch per expert and a host sync to read the offsets."""
    _check(x, w, offsets)
    y = torch.empty(x.shape[0], w.shape[2], dtype=x.dtype, device=x.device)  # [rows, N]
    bounds = offsets.tolist()
    for e in range(w.shape[0]):
        lo, hi = bounds[e], bounds[e + 1]
        if hi > lo:
            torch.matmul(x[lo:hi], w[e], out=y[lo:hi])
    return y


# One program per (row tile of one group, column tile). Tiles never straddle two groups, so each
# program multiplies by exactly one w[e]. The tile -> group map is computed on the device with
# torch ops (no .tolist(), so no host sync and the launch can be captured in a CUDA graph); the
# grid is sized for the worst case, cdiv(rows, BLOCK_M) + groups tiles, and spare programs exit.
@triton.jit
def _grouped_gemm_kernel(
    x_ptr, w_ptr, y_ptr, offsets_ptr, tile_group_ptr, tile_row_ptr, N, K, num_groups,
    stride_xm, stride_xk, stride_we, stride_wk, stride_wn, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    tile = tl.program_id(0)
    e = tl.load(tile_group_ptr + tile)
    if e >= num_groups:  # a spare program: fewer tiles were needed than the worst case
        return
    row_end = tl.load(offsets_ptr + e + 1)
    rows = tl.load(tile_row_ptr + tile) + tl.arange(0, BLOCK_M)  # [BLOCK_M] rows of group e
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    ks = tl.arange(0, BLOCK_K)
    w_base = w_ptr + e.to(tl.int64) * stride_we
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    in_group = rows[:, None] < row_end  # [BLOCK_M, 1]: the tile's last rows may be the next group's
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(x_ptr + rows[:, None] * stride_xm + (k0 + ks)[None, :] * stride_xk,
                    mask=in_group & ((k0 + ks)[None, :] < K), other=0.0)  # fmt: skip
        b = tl.load(w_base + (k0 + ks)[:, None] * stride_wk + cols[None, :] * stride_wn,
                    mask=((k0 + ks)[:, None] < K) & (cols[None, :] < N), other=0.0)  # fmt: skip
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    mask = in_group & (cols[None, :] < N)
    y_ptrs = y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)  # the one rounding


def tile_map(offsets: torch.Tensor, block_m: int, max_rows: int) -> tuple[torch.Tensor, ...]:
    """For each row tile: its group and first row ([max_tiles] each); spare tiles get group =
    num_groups. vLLM's `moe_align_block_size` does the same job (it pads groups instead)."""
    counts = offsets[1:] - offsets[:-1]  # [groups]
    tiles = (counts + block_m - 1) // block_m  # [groups] row tiles per group
    ends = torch.cumsum(tiles, 0)  # [groups] one past each group's last tile
    max_tiles = triton.cdiv(max_rows, block_m) + offsets.numel() - 1
    t = torch.arange(max_tiles, device=offsets.device)
    group = torch.searchsorted(ends, t, right=True)  # [max_tiles]; == groups past the end
    safe = group.clamp(max=counts.numel() - 1)
    first_tile = ends[safe] - tiles[safe]
    row = offsets[safe] + (t - first_tile) * block_m  # [max_tiles]
    return group.to(torch.int32), row.to(torch.int32)


def grouped_gemm(
    x: torch.Tensor,
    w: torch.Tensor,
    offsets: torch.Tensor,
    BLOCK_M: int = 64,
    BLOCK_N: int = 64,
    BLOCK_K: int = 32,
    num_warps: int = 4,
    num_stages: int = 3,
) -> torch.Tensor:
    """Triton: y[offsets[e]:offsets[e+1]] = x[same rows] @ w[e] for every group in one launch.

    Tiles and warps/stages are tuning knobs (the interpreter ignores the last two): at decode a
    group holds a row or two, so BLOCK_M = 16 and wide, deep weight tiles stream the weights;
    at prefill 128 x 128 tiles keep the tensor cores busy (`python -m minirt.bench moe`)."""
    _check(x, w, offsets)
    m, n, k = x.shape[0], w.shape[2], x.shape[1]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)  # [rows, N]
    if m == 0 or n == 0:
        return y
    group, row = tile_map(offsets.to(torch.int64), BLOCK_M, m)
    grid = (group.numel(), triton.cdiv(n, BLOCK_N))
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    _grouped_gemm_kernel[grid](
        x, w, y, offsets.to(torch.int32), group, row, n, k, w.shape[0],
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), w.stride(2), y.stride(0), y.stride(1),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, PRECISION=precision,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return y
