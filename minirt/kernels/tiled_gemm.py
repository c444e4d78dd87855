"""tiled_gemm: C = A @ B in Triton, in the steps of the CUDA series in minirt/bench/smem_gemm.py.

For learners without a CUDA compiler: the same progression (naive, tiled, tile shape as a
compile-time parameter) where the Triton compiler does the shared-memory staging, the barriers
and the register blocking that the CUDA kernels write by hand. Every step accumulates in fp32 and
rounds once to the input dtype, as `matmul_ref` does; all run under TRITON_INTERPRET=1 on a CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def matmul_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The spec: fp32 products and sums, one rounding to the input dtype at the end."""
    _check(a, b)
    return (a.float() @ b.float()).to(a.dtype)  # [M, N]


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(
            f"matmul takes 2-D matrices, got shapes {tuple(a.shape)} and {tuple(b.shape)}; "
            "reshape a batch to [rows, K] first (x.reshape(-1, x.shape[-1]))"
        )
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"inner dimensions differ: A is {tuple(a.shape)} and B is {tuple(b.shape)}, so "
            f"A's {a.shape[1]} columns cannot meet B's {b.shape[0]} rows; pass B with "
            f"{a.shape[1]} rows (B.T if B is stored as [N, K])"
        )
    if a.dtype != b.dtype:
        raise ValueError(f"A is {a.dtype} but B is {b.dtype}; cast one so that both match")


def _launch_args(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, dict]:
    _check(a, b)
    (m, k), n = a.shape, b.shape[1]
    c = torch.empty((m, n), dtype=a.dtype, device=a.device)  # [M, N]
    # strides, not .contiguous(): a transposed view (B.T) is read in place
    args = dict(M=m, N=n, K=k, stride_am=a.stride(0), stride_ak=a.stride(1),
                stride_bk=b.stride(0), stride_bn=b.stride(1),
                stride_cm=c.stride(0), stride_cn=c.stride(1))  # fmt: skip
    return c, args


# ---------------------------------------------------------------------------------------------
# Step 1, naive. Triton has no "one thread per output": a program is a whole block of threads and
# its values are tiles, so the closest thing to CUDA's `naive` is one program per BLOCK_M x
# BLOCK_N tile of C (CUDA's thread block) in which every element keeps its own running sum and
# K is walked one step at a time (BLOCK_K = 1): a column of A times a row of B, added as an outer
# product. Every A and B value comes from global memory, once per tile that needs it; there is
# no tl.dot, so no tile is staged in shared memory and no tensor core is used.
@triton.jit
def _naive_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M], blockIdx.y in CUDA
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(K):
        a = tl.load(a_ptr + rows * stride_am + k * stride_ak, mask=rows < M, other=0.0)
        b = tl.load(b_ptr + k * stride_bk + cols * stride_bn, mask=cols < N, other=0.0)
        acc += a.to(tl.float32)[:, None] * b.to(tl.float32)[None, :]  # one FMA per element
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    c_ptrs = c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


def matmul_naive(a: torch.Tensor, b: torch.Tensor, BLOCK_M: int = 32, BLOCK_N: int = 32):
    """Step 1: a BLOCK_M x BLOCK_N tile per program, K one element at a time."""
    c, args = _launch_args(a, b)
    grid = (triton.cdiv(args["M"], BLOCK_M), triton.cdiv(args["N"], BLOCK_N))
    if c.numel():
        _naive_kernel[grid](a, b, c, **args, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
    return c


# ---------------------------------------------------------------------------------------------
# Step 2, tiled. The loop is CUDA's `tiled` kernel: per step of BLOCK_K, load a BLOCK_M x BLOCK_K
# tile of A and a BLOCK_K x BLOCK_N tile of B, multiply them, move on. What the CUDA kernel does
# by hand the compiler does here: for tl.dot it places both tiles in shared memory (with a
# swizzled layout, CUDA's step 5, so no bank conflicts), inserts the __syncthreads() before the
# reads and the one before the next overwrite (CUDA's steps 2-3), splits the tile among threads
# with several outputs each (register blocking, steps 6-7) and, on GPUs that have them, issues
# tensor-core instructions and pipelines the next tile's load behind this tile's math.
@triton.jit
def _tile_of_c(
    a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """The fp32 BLOCK_M x BLOCK_N tile (pid_m, pid_n) of A @ B; both steps 2 and 3 call it."""
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    ks = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        # masks: zeros past the edges of A and B add nothing to the sum, so sizes need not be
        # multiples of the tile (the CUDA series requires multiples of 128 instead)
        a = tl.load(a_ptr + rows[:, None] * stride_am + (k0 + ks)[None, :] * stride_ak,
                    mask=(rows[:, None] < M) & ((k0 + ks)[None, :] < K), other=0.0)  # fmt: skip
        b = tl.load(b_ptr + (k0 + ks)[:, None] * stride_bk + cols[None, :] * stride_bn,
                    mask=((k0 + ks)[:, None] < K) & (cols[None, :] < N), other=0.0)  # fmt: skip
        acc = tl.dot(a, b, acc, input_precision=PRECISION)  # [BLOCK_M, BLOCK_N] += [M,K] @ [K,N]
    return acc


@triton.jit
def _store_tile(c_ptr, acc, M, N, stride_cm, stride_cn, pid_m, pid_n,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    c_ptrs = c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)  # the one rounding


@triton.jit
def _tiled_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)  # a 2-D grid, as blockIdx.y / blockIdx.x
    acc = _tile_of_c(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                     pid_m, pid_n, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)  # fmt: skip
    _store_tile(c_ptr, acc, M, N, stride_cm, stride_cn, pid_m, pid_n, BLOCK_M, BLOCK_N)


def _precision(dtype: torch.dtype) -> str:
    # fp32 stays fp32 (the CUDA series is SGEMM with TF32 off); 16-bit inputs ignore the setting
    return "ieee" if dtype == torch.float32 else "tf32"


def _check_tile(**blocks: int) -> None:
    for name, size in blocks.items():
        if size < 16 or size & (size - 1):
            raise ValueError(
                f"{name}={size}: tl.dot tiles must be powers of two of at least 16; "
                f"use {max(16, triton.next_power_of_2(size))}"
            )


def matmul_tiled(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Step 2: the CUDA `tiled` kernel's 32 x 32 tiles of C, K in steps of 32, with tl.dot."""
    c, args = _launch_args(a, b)
    grid = (triton.cdiv(args["M"], 32), triton.cdiv(args["N"], 32))
    if c.numel():
        _tiled_kernel[grid](a, b, c, **args, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32,
                            PRECISION=_precision(a.dtype))  # fmt: skip
    return c


# ---------------------------------------------------------------------------------------------
# Step 3, configurable. tl.constexpr is Triton's C++ template parameter: each set of values
# compiles (and caches) its own kernel, as `templated<BM, BN, BK, TM, TN>` instantiates one. There
# is no TM x TN to choose; the compiler picks each thread's share. New here: grouped ordering.
# Programs run roughly in pid order; in row-major order, consecutive programs share one row of A
# tiles but read every column of B, which falls out of L2 before the next row comes back to it.
# Walking GROUP_M rows of tiles column by column keeps GROUP_M tiles of A and a few of B hot.
@triton.jit
def _matmul_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)  # a 1-D grid so that we choose the order of the tiles
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * num_n)  # GROUP_M rows of tiles, num_n columns each
    first_m = group * GROUP_M
    group_rows = min(num_m - first_m, GROUP_M)  # the last group may be short
    pid_m = first_m + (pid % (GROUP_M * num_n)) % group_rows  # down a column of the group...
    pid_n = (pid % (GROUP_M * num_n)) // group_rows  # ...then the next column; GROUP_M=1: rows
    acc = _tile_of_c(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                     pid_m, pid_n, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)  # fmt: skip
    _store_tile(c_ptr, acc, M, N, stride_cm, stride_cn, pid_m, pid_n, BLOCK_M, BLOCK_N)


def matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    BLOCK_M: int = 128,
    BLOCK_N: int = 128,
    BLOCK_K: int = 32,
    GROUP_M: int = 8,
) -> torch.Tensor:
    """Step 3: any power-of-two tile; GROUP_M > 1 orders tiles for L2 reuse (1: row-major)."""
    _check_tile(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    if GROUP_M < 1:
        raise ValueError(f"GROUP_M={GROUP_M}: give 1 (row-major order) or more (grouped)")
    c, args = _launch_args(a, b)
    grid = (triton.cdiv(args["M"], BLOCK_M) * triton.cdiv(args["N"], BLOCK_N),)
    if c.numel():
        _matmul_kernel[grid](a, b, c, **args, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
                             GROUP_M=GROUP_M, PRECISION=_precision(a.dtype))  # fmt: skip
    return c
