"""Shared-memory SGEMM, step by step: from one thread per output to a register-blocked kernel.

Each step of `SOURCE` is one CUDA kernel for row-major fp32 C = A @ B, with a comment on what
changed and why; the fp16 steps (`_h`, fp32 sums) are in `minirt.bench.smem_gemm_half`. `run`
times every step against cuBLAS of its dtype (torch.matmul: SGEMM with TF32 off, HGEMM) and
checks it, counts its shared-memory bank conflicts under one ncu process and runs
compute-sanitizer's racecheck on the tiled kernel with and without its second barrier
(`python -m minirt.bench smem-gemm`). Sizes are multiples of the largest tile (128).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from minirt.bench.cli import add_out
from minirt.bench.ncu import _number
from minirt.bench.smem_gemm_half import HALF_ARGS, HALF_SHAPES, HALF_SOURCE
from minirt.bench.timing import cuda_median_ms

# every kernel: C [M, N] = A [M, K] @ B [K, N], all row-major fp32
ARGS = ("const float *__restrict__ A, const float *__restrict__ B, float *__restrict__ C, "
        "int M, int N, int K")  # fmt: skip

# Steps 1-5: a 32 x 32 block of threads computes a 32 x 32 tile of C; threadIdx.x runs along a
# row of C so that a warp reads 32 neighbouring floats of B (one coalesced request).
SIMPLE = f"""
// step 1, naive: one thread per C element; every A and B value comes from global memory
// (K loads of each per output: the caches, not the kernel, keep this from being far slower).
extern "C" __global__ void naive({ARGS}) {{
    const int row = blockIdx.y * 32 + threadIdx.y, col = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.f;
    for (int k = 0; k < K; ++k) acc += A[(long long)row * K + k] * B[(long long)k * N + col];
    C[(long long)row * N + col] = acc;
}}

// step 2, tiled: the block loads a 32 x 32 tile of A and of B into shared memory once and
// every thread reads it 32 times. The first barrier: the tile is whole before anyone reads it.
// The second: nobody overwrites it with the next tile while others still read it.
extern "C" __global__ void tiled({ARGS}) {{
    __shared__ float As[32][32], Bs[32][32];
    const int ty = threadIdx.y, tx = threadIdx.x;
    const int row = blockIdx.y * 32 + ty, col = blockIdx.x * 32 + tx;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += 32) {{
        As[ty][tx] = A[(long long)row * K + k0 + tx];
        Bs[ty][tx] = B[(long long)(k0 + ty) * N + col];
        __syncthreads();
        for (int k = 0; k < 32; ++k) acc += As[ty][k] * Bs[k][tx];  // As: broadcast in a warp
        __syncthreads();
    }}
    C[(long long)row * N + col] = acc;
}}

// step 3, tiled_nosync: step 2 without the second barrier. A fast warp may store the next
// tile while a slow one still reads this one: a race (write after read). The result may even
// come out right; compute-sanitizer --tool racecheck reports the hazard either way.
extern "C" __global__ void tiled_nosync({ARGS}) {{
    __shared__ float As[32][32], Bs[32][32];
    const int ty = threadIdx.y, tx = threadIdx.x;
    const int row = blockIdx.y * 32 + ty, col = blockIdx.x * 32 + tx;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += 32) {{
        As[ty][tx] = A[(long long)row * K + k0 + tx];
        Bs[ty][tx] = B[(long long)(k0 + ty) * N + col];
        __syncthreads();
        for (int k = 0; k < 32; ++k) acc += As[ty][k] * Bs[k][tx];
        // the missing __syncthreads()
    }}
    C[(long long)row * N + col] = acc;
}}

// step 4, tiled_transposed_*: B's tile stored transposed, Bt[col][k], so that each thread's
// column of B is a row of shared memory. A warp (fixed ty, tx = 0..31) then stores to and reads
// from Bt[tx][.]: 32 rows at the same column. With rows of 32 floats that column is the same
// bank for all 32 threads (a 32-way conflict on every load and store); a row of 33 floats
// shifts each row by one bank, and the 32 accesses fall into 32 banks.
#define TILED_TRANSPOSED(NAME, WIDTH)                                               \\
extern "C" __global__ void NAME({ARGS}) {{                                           \\
    __shared__ float As[32][32], Bt[32][WIDTH];                                     \\
    const int ty = threadIdx.y, tx = threadIdx.x;                                   \\
    const int row = blockIdx.y * 32 + ty, col = blockIdx.x * 32 + tx;               \\
    float acc = 0.f;                                                                \\
    for (int k0 = 0; k0 < K; k0 += 32) {{                                            \\
        As[ty][tx] = A[(long long)row * K + k0 + tx];                                  \\
        Bt[tx][ty] = B[(long long)(k0 + ty) * N + col];                                \\
        __syncthreads();                                                            \\
        for (int k = 0; k < 32; ++k) acc += As[ty][k] * Bt[tx][k];                  \\
        __syncthreads();                                                            \\
    }}                                                                               \\
    C[(long long)row * N + col] = acc;                                                 \\
}}
TILED_TRANSPOSED(tiled_transposed_conflict, 32)
TILED_TRANSPOSED(tiled_transposed_pad, 33)

// step 5, swizzled: the same transposed tile, [32][32] with no padding, but element (r, c)
// lives at column c ^ r. Row r = tx, so the 32 threads of a warp land on 32 different banks,
// and no shared memory is spent on padding (what tensor-core kernels and TMA do).
extern "C" __global__ void swizzled({ARGS}) {{
    __shared__ float As[32][32], Bt[32][32];
    const int ty = threadIdx.y, tx = threadIdx.x;
    const int row = blockIdx.y * 32 + ty, col = blockIdx.x * 32 + tx;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += 32) {{
        As[ty][tx] = A[(long long)row * K + k0 + tx];
        Bt[tx][ty ^ tx] = B[(long long)(k0 + ty) * N + col];
        __syncthreads();
        for (int k = 0; k < 32; ++k) acc += As[ty][k] * Bt[tx][k ^ tx];
        __syncthreads();
    }}
    C[(long long)row * N + col] = acc;
}}
"""

# Steps 6-7 share one body. A block of (BM/TM) x (BN/TN) threads computes a BM x BN tile of C;
# each thread a TM x TN piece of it, kept in registers. Per step along K it reads TM values of A
# and TN of B from shared memory and does TM * TN multiply-adds: 8 x 8 gives 64 FMAs per 16
# shared loads, where steps 2-5 did 1 per 2. A is stored transposed (As[k][m]) so that a
# thread's TM values of A are neighbours and load as float4; global loads are float4 too.
REGBLOCK_BODY = """
    constexpr int THREADS = (BM / TM) * (BN / TN);
    static_assert(BK % 4 == 0 && BN % 4 == 0 && TN % 4 == 0, "float4 loads and stores");
    static_assert(THREADS % (BK / 4) == 0 && THREADS % (BN / 4) == 0, "whole rows per pass");
    __shared__ __align__(16) float As[BK * BM];  // [BK][BM]: the A tile, transposed
    __shared__ __align__(16) float Bs[BK * BN];  // [BK][BN]
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int tRow = threadIdx.x / (BN / TN) * TM, tCol = threadIdx.x % (BN / TN) * TN;
    const int aRow = threadIdx.x / (BK / 4), aCol = threadIdx.x % (BK / 4) * 4;
    const int bRow = threadIdx.x / (BN / 4), bCol = threadIdx.x % (BN / 4) * 4;
    float acc[TM][TN] = {};
    float a[TM], b[TN];
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int r = aRow; r < BM; r += THREADS / (BK / 4)) {
            const float4 v =
                *reinterpret_cast<const float4 *>(&A[(long long)(row0 + r) * K + k0 + aCol]);
            As[(aCol + 0) * BM + r] = v.x;
            As[(aCol + 1) * BM + r] = v.y;
            As[(aCol + 2) * BM + r] = v.z;
            As[(aCol + 3) * BM + r] = v.w;
        }
        for (int r = bRow; r < BK; r += THREADS / (BN / 4))
            *reinterpret_cast<float4 *>(&Bs[r * BN + bCol]) =
                *reinterpret_cast<const float4 *>(&B[(long long)(k0 + r) * N + col0 + bCol]);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = As[k * BM + tRow + i];
#pragma unroll
            for (int j = 0; j < TN; ++j) b[j] = Bs[k * BN + tCol + j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; j += 4)
            *reinterpret_cast<float4 *>(&C[(long long)(row0 + tRow + i) * N + col0 + tCol + j]) =
                make_float4(acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3]);
"""

REGBLOCK = f"""
// step 6, regblock: register blocking, 128 x 128 tiles of C, K in steps of 8, 8 x 8 per thread.
extern "C" __global__ void __launch_bounds__(256) regblock({ARGS}) {{
    constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
{REGBLOCK_BODY}}}

// step 7, templated: the same body with the tile shape as template parameters, so one source
// gives every shape (instantiated by name: RawModule's name_expressions).
template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) templated({ARGS}) {{
{REGBLOCK_BODY}}}
"""

SOURCE = SIMPLE + REGBLOCK + HALF_SOURCE
SHAPES = ((128, 128, 8, 8, 8), (128, 128, 16, 8, 8), (64, 64, 8, 4, 4), (128, 64, 16, 8, 4))
TILE = 128  # sizes must be multiples of the largest tile
REL_ERR_BOUND = 1e-4  # max |C - ref| / max |ref|; fp32 summation-order differences are ~1e-6
# fp16 C with fp32 sums: kernel and cuBLAS each round the same fp32 value to half, at most half
# an ulp (2^-11 |C|) apart from it, so they differ by at most one ulp, 2^-10 |C| <= 9.8e-4
# max|ref|, plus summation-order noise (~1e-6). 2e-3 leaves one ulp of margin; a wrong index
# gives errors of order 1.
REL_ERR_BOUNDS = {"fp32": REL_ERR_BOUND, "fp16": 2e-3}
DTYPES = ("fp32", "fp16")
CUBLAS = {"fp32": "cublas", "fp16": "cublas_h"}  # the baseline row of each dtype


@dataclass(frozen=True)
class Kernel:
    """One step: its row name, the symbol RawModule knows it by and its launch shape."""

    name: str
    symbol: str
    bm: int = 32  # the C tile of one block
    bn: int = 32
    block: tuple[int, int] = (32, 32)
    dtype: str = "fp32"  # of A, B and C ("fp16": __half; the sums are fp32 in both)


def _templated(bm: int, bn: int, bk: int, tm: int, tn: int, dtype: str = "fp32") -> Kernel:
    h = "_h" if dtype == "fp16" else ""
    return Kernel(f"templated_{bm}x{bn}x{bk}_{tm}x{tn}{h}",
                  f"templated{h}<{bm}, {bn}, {bk}, {tm}, {tn}>",
                  bm, bn, ((bm // tm) * (bn // tn), 1), dtype)  # fmt: skip


KERNELS = [Kernel(n, n) for n in ("naive", "tiled", "tiled_nosync", "tiled_transposed_conflict",
                                  "tiled_transposed_pad", "swizzled")]  # fmt: skip
KERNELS += [
    Kernel("regblock", "regblock", 128, 128, (256, 1)),
    *(_templated(*shape) for shape in SHAPES),
]
KERNELS += [Kernel(n, n, dtype="fp16") for n in ("tiled_h", "tiled_transposed_conflict_h",
            "tiled_transposed_pad1_h", "tiled_transposed_pad_h", "swizzled_h")]  # fmt: skip
KERNELS += [
    Kernel("regblock_h", "regblock_h", 128, 128, (256, 1), "fp16"),
    *(_templated(*shape, dtype="fp16") for shape in HALF_SHAPES),
    Kernel("wmma_h", "wmma_h", 64, 64, (128, 1), "fp16"),  # tensor cores
]
BY_NAME = {k.name: k for k in KERNELS}


def of_dtype(results: list[dict[str, Any]], dtype: str = "fp32") -> list[dict[str, Any]]:
    """The rows of one dtype; a row without a `dtype` field (runs before fp16) is fp32."""
    return [r for r in results if r.get("dtype", "fp32") == dtype]


def nvcc_source() -> str:
    """SOURCE with the templates instantiated explicitly (nvcc has no name_expressions)."""
    args = {"fp32": ARGS, "fp16": HALF_ARGS}
    explicit = "".join(f"template __global__ void {k.symbol}({args[k.dtype]});\n"
                       for k in KERNELS if "<" in k.symbol)  # fmt: skip
    return SOURCE + explicit


def _crt_include() -> Path | None:
    """A CUDA include folder holding crt/mma.h: <mma.h> (WMMA) includes it, and the pip CUDA
    headers CuPy may find first lack it. The toolkit has it, and so does Triton's copy."""
    import triton

    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    folders = [Path(h) / "include" for h in homes if h]
    folders.append(Path(triton.__file__).parent / "backends" / "nvidia" / "include")
    return next((f for f in folders if (f / "crt" / "mma.h").exists()), None)


def load_module():
    """Compile every step in one CuPy RawModule (NVRTC) for this GPU."""
    import cupy as cp

    major, minor = cp.cuda.Device().compute_capability
    templates = [k.symbol for k in KERNELS if "<" in k.symbol]
    options = [f"-arch=sm_{major}{minor}"]
    include = _crt_include()
    if include is not None:
        options.append(f"-I{include}")
    return cp.RawModule(code=SOURCE, options=tuple(options), name_expressions=templates)


def launch(module, kernel: Kernel, a, b, c) -> None:
    """C = A @ B with one step's kernel; a [M, K], b [K, N], c [M, N], CuPy arrays of the
    kernel's dtype (float32 or float16)."""
    import numpy as np

    (m, k), n = a.shape, b.shape[1]
    if m % TILE or n % TILE or k % TILE:
        raise ValueError(f"sizes {m}x{n}x{k} must be multiples of {TILE} (the largest tile)")
    want = np.float16 if kernel.dtype == "fp16" else np.float32
    if any(x.dtype != want for x in (a, b, c)):
        raise ValueError(f"{kernel.name} takes {np.dtype(want).name} A, B and C, got "
                         f"{a.dtype}, {b.dtype}, {c.dtype}; convert them or pick the "
                         f"{'fp32' if kernel.dtype == 'fp16' else 'fp16'} kernel")  # fmt: skip
    grid = (n // kernel.bn, m // kernel.bm)
    module.get_function(kernel.symbol)(grid, kernel.block, (a, b, c, np.int32(m), np.int32(n),
                                                           np.int32(k)))  # fmt: skip


def _inputs(size: int, dtype: str = "fp32"):
    """Random A and B made on the host (fp16: fp32 draws rounded, a fresh seed) and copied over:
    no kernel runs, so ncu's IDs are ours alone."""
    import cupy as cp
    import numpy as np

    rng = np.random.default_rng(DTYPES.index(dtype))
    np_dtype = np.float16 if dtype == "fp16" else np.float32
    a, b = (cp.asarray(rng.standard_normal((size, size), dtype=np.float32).astype(np_dtype))
            for _ in range(2))  # fmt: skip
    return a, b, cp.empty((size, size), dtype=np_dtype)


def launch_each_once(names: list[str], size: int) -> None:
    """ncu's and compute-sanitizer's target: each named kernel once, in order."""
    import cupy as cp

    module = load_module()
    inputs = {d: _inputs(size, d) for d in DTYPES if any(BY_NAME[n].dtype == d for n in names)}
    for name in names:
        launch(module, BY_NAME[name], *inputs[BY_NAME[name].dtype])
    cp.cuda.Device().synchronize()


def time_all(size: int, reps: int = 5, warmup: int = 2,
             dtypes: tuple[str, ...] = DTYPES) -> list[dict[str, Any]]:  # fmt: skip
    """Per dtype, cuBLAS of that dtype then each of its steps at size^3: median ms of `reps`
    after `warmup`, GFLOP/s, fraction of the same-dtype cuBLAS, error against it."""
    import cupy as cp
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # cuBLAS SGEMM in true fp32, as the kernels
    # HGEMM summing in fp32 as the kernels do (torch allows cuBLAS fp16 partial sums otherwise)
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    # CuPy launches on its current stream, torch's events record on torch's: both must be the
    # legacy default stream, or the events would time nothing.
    if cp.cuda.get_current_stream().ptr != 0 or torch.cuda.current_stream().cuda_stream != 0:
        raise RuntimeError("time_all needs CuPy and torch on the default stream; unset theirs")
    module, flops, rows = load_module(), 2 * size**3, []
    for dtype in dtypes:
        a, b, c = _inputs(size, dtype)
        ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")  # no copy
        ref = torch.matmul(ta, tb).float()  # fp16: the HGEMM result, compared in fp32
        cublas_ms = cuda_median_ms(partial(torch.matmul, ta, tb), reps, warmup)
        rows.append({"kernel": CUBLAS[dtype], "dtype": dtype, "ms": cublas_ms,
                     "gflops": flops / cublas_ms / 1e6, "fraction_of_cublas": 1.0,
                     "max_rel_err": 0.0})  # fmt: skip
        for kernel in (k for k in KERNELS if k.dtype == dtype):
            c.fill(float("nan"))  # a kernel that skips an element cannot pass on stale results
            ms = cuda_median_ms(partial(launch, module, kernel, a, b, c), reps, warmup)
            got = torch.as_tensor(c, device="cuda").float()
            err = float((got - ref).abs().max() / ref.abs().max())
            err = err if err == err else None  # NaN: some element was never written
            rows.append({"kernel": kernel.name, "dtype": dtype, "ms": ms,
                         "gflops": flops / ms / 1e6, "fraction_of_cublas": cublas_ms / ms,
                         "max_rel_err": err})  # fmt: skip
    return rows


METRICS = [f"l1tex__data_{kind}_mem_shared_op_{op}.sum" for op in ("ld", "st")
           for kind in ("bank_conflicts_pipe_lsu", "pipe_lsu_wavefronts")]  # fmt: skip
_COLUMNS = {"ld_conflicts": METRICS[0], "ld_wavefronts": METRICS[1],
            "st_conflicts": METRICS[2], "st_wavefronts": METRICS[3]}  # fmt: skip


def _tool(name: str) -> str | None:
    """A CUDA tool on PATH, or in the toolkit's bin folder where PATH lacks it."""
    found = shutil.which(name)
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    return found or (str(Path(home, "bin", name)) if Path(home, "bin", name).exists() else None)


def _env() -> dict[str, str]:
    """This process's environment with the repository on PYTHONPATH (for `-m` targets)."""
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}  # fmt: skip


def parse_csv(text: str) -> list[tuple[str, dict[str, Any]]]:
    """`ncu --csv` output -> [(kernel name, {metric: value})] in launch order (ncu's ID)."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    if not lines:
        raise ValueError("no CSV rows in the ncu output; did ncu profile any kernel?")
    found: dict[int, tuple[str, dict[str, Any]]] = {}
    for r in csv.DictReader(io.StringIO("\n".join(lines))):
        if r.get("Metric Name"):
            # "templated<128, 128, 8, 8, 8>" or "void templated<...>(const float *, ...)"
            name = r["Kernel Name"].split("(")[0].removeprefix("void ").strip()
            entry = found.setdefault(int(r["ID"]), (name, {}))
            entry[1][r["Metric Name"]] = _number(r["Metric Value"])
    return [found[i] for i in sorted(found)]


def _base(name: str) -> str:
    return name.split("<")[0].strip()


def measure_conflicts(size: int = 1024) -> dict[str, dict[str, Any]]:
    """Every step launched once at size^3 under one ncu process: {kernel: {column: count}}."""
    names = [k.name for k in KERNELS]
    cmd = [_tool("ncu") or "ncu", "--target-processes", "all", "--metrics", ",".join(METRICS),
           "--csv", "--print-units", "base", sys.executable, "-m", "minirt.bench.smem_gemm",
           "ncu", str(size), *names]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"ncu failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")  # fmt: skip
    profiled = parse_csv(done.stdout)
    if [_base(n) for n, _ in profiled] != [_base(BY_NAME[n].symbol) for n in names]:
        raise RuntimeError(f"ncu profiled {[n for n, _ in profiled]}, expected {names} in order")
    return {name: {col: _count(m.get(metric)) for col, metric in _COLUMNS.items()}
            for name, (_, m) in zip(names, profiled, strict=True)}  # fmt: skip


def _count(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


_SUMMARY = re.compile(r"RACECHECK SUMMARY: (\d+) hazards? displayed.*")


def parse_racecheck(text: str) -> tuple[int, str]:
    """compute-sanitizer racecheck output -> (hazards displayed, the summary line)."""
    match = _SUMMARY.search(text)
    if match is None:
        raise ValueError("no 'RACECHECK SUMMARY' line in the output; did the sanitizer run?")
    return int(match.group(1)), match.group(0).strip()


def racecheck(name: str, size: int = 256) -> tuple[int, str]:
    """compute-sanitizer --tool racecheck over one launch of `name`: (hazards, summary line)."""
    sanitizer = _tool("compute-sanitizer") or "compute-sanitizer"
    target = ["-m", "minirt.bench.smem_gemm", "racecheck", str(size), name]
    cmd = [sanitizer, "--tool", "racecheck", sys.executable, *target]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    output = done.stdout + done.stderr  # it exits non-zero when it finds hazards: no check
    try:
        return parse_racecheck(output)
    except ValueError as e:
        raise ValueError(f"{e}\nthe sanitizer's output ended with:\n{output[-2000:]}") from None


def rows(timed: list[dict[str, Any]], conflicts: dict[str, dict[str, Any]],
         hazards: dict[str, int]) -> list[dict[str, Any]]:  # fmt: skip
    """One row per kernel: dtype, time, error, bank conflicts (None: not measured), racecheck
    hazards."""
    return [{"name": "smem-gemm", "dtype": "fp32", **r,
             **{col: conflicts.get(r["kernel"], {}).get(col) for col in _COLUMNS},
             "racecheck_hazards": hazards.get(r["kernel"])} for r in timed]  # fmt: skip


def run(out_dir, command: str, size: int = 4096, ncu_size: int = 1024,
        race_size: int = 256) -> Path:  # fmt: skip
    """Time every step at size^3; ncu and racecheck where the tools exist (else a note)."""
    import torch

    from minirt.bench.timing import gpu_device
    from minirt.results import write_results

    timed = time_all(size)
    notes, conflicts, hazards, race_text = [], {}, {}, {}
    if _tool("ncu"):
        try:
            conflicts = measure_conflicts(ncu_size)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            notes.append(f"bank conflicts not measured: {e}")
    else:
        notes.append("bank conflicts not measured: Nsight Compute's `ncu` is not installed")
    if _tool("compute-sanitizer"):
        for name in ("tiled_nosync", "tiled"):
            try:
                hazards[name], race_text[name] = racecheck(name, race_size)
            except (ValueError, subprocess.TimeoutExpired) as e:
                notes.append(f"racecheck of {name} failed: {e}")
    else:
        notes.append("racecheck not run: compute-sanitizer is not installed")
    major, minor = torch.cuda.get_device_capability()
    # rel_err_bound: fp32's, as before fp16 rows existed; rel_err_bounds: per dtype
    config = {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}",
              "size": size, "ncu_size": ncu_size, "racecheck_size": race_size,
              "dtype": "fp32, fp16", "dtypes": list(DTYPES),
              "cublas": "torch.matmul: SGEMM allow_tf32=False (fp32 rows); HGEMM "
                        "allow_fp16_reduced_precision_reduction=False (fp16 rows)",
              "rel_err_bound": REL_ERR_BOUND, "rel_err_bounds": REL_ERR_BOUNDS,
              "racecheck": race_text, "notes": notes}  # fmt: skip
    return write_results("smem-gemm", gpu_device(), rows(timed, conflicts, hazards), out_dir,
                         command, config=config)  # fmt: skip


# The ld/st bank conflicts each kernel's addresses imply, in Nsight Compute's units at
# NCU_REF^3; every count grows as size^3 (blocks as size^2, steps along K as size). Each is
# minirt.tools.bank.simulate over the kernel's shared-memory instructions, re-derived in
# tests/bench/test_smem_gemm.py; tiled_transposed_conflict's assumes its B reads compile to
# LDS.128, as its wavefront count says (notebook 09, section 3), and the fp16 kernels' assume
# the instruction widths nvcc 13.0 gives for sm_90 (listed in that test).
NCU_REF = 1024
ADDRESS_CONFLICTS = {
    "naive": (0, 0), "tiled": (0, 0), "tiled_nosync": (0, 0),
    "tiled_transposed_conflict": (234_881_024, 32_505_856), "tiled_transposed_pad": (0, 0),
    "swizzled": (0, 0), "regblock": (4_194_304, 262_144),
    "templated_128x128x8_8x8": (4_194_304, 262_144),
    "templated_128x128x16_8x8": (4_194_304, 786_432),
    "templated_64x64x8_4x4": (0, 524_288), "templated_128x64x16_8x4": (0, 1_572_864),
    # fp16: the unpadded transposed tile is 16-way, not 32-way (two rows per bank sweep), read
    # as LDS.64 (four k at once: 16 wavefronts where 2 would do); one half of padding leaves a
    # 2-way conflict on every odd k and odd ty; a word of padding, or the word swizzle, none.
    # The register-blocked B reads are conflict-free as 16-byte HalfN<8> (fp32: 2-way).
    "tiled_h": (0, 0), "tiled_transposed_conflict_h": (117_440_512, 15_728_640),
    "tiled_transposed_pad1_h": (16_777_216, 524_288), "tiled_transposed_pad_h": (0, 0),
    "swizzled_h": (0, 0), "regblock_h": (0, 262_144),
    "templated_128x128x16_8x8_h": (0, 786_432), "templated_64x64x8_4x4_h": (0, 524_288),
    "wmma_h": (0, 262_144),  # A's 16-byte stores into 80-byte rows: 2-way; ldmatrix: none
}  # fmt: skip


def residue(record: dict[str, Any], dtype: str | None = "fp32") -> list[dict[str, Any]]:
    """What ncu counts beyond the conflicts the addresses imply: per kernel and op, the extra
    conflicts and their share (%) of that op's wavefronts. Kernels without ncu counts are left
    out, and rows of another dtype (None: every dtype). The residue is what whole-kernel
    counters add to the per-instruction picture (notebook 09, section 5)."""
    scale = (record["config"]["ncu_size"] / NCU_REF) ** 3
    rows = []
    results = record["results"] if dtype is None else of_dtype(record["results"], dtype)
    for r in results:
        if r["kernel"] not in ADDRESS_CONFLICTS or r["ld_conflicts"] is None:
            continue
        row: dict[str, Any] = {"kernel": r["kernel"]}
        for op, expected in zip(("ld", "st"), ADDRESS_CONFLICTS[r["kernel"]], strict=True):
            extra = r[f"{op}_conflicts"] - round(expected * scale)
            row[f"{op}_residue"] = extra
            row[f"{op}_pct"] = 100 * extra / r[f"{op}_wavefronts"] if r[f"{op}_wavefronts"] else 0.0
        rows.append(row)
    return rows


def summary(results: list[dict[str, Any]]) -> str:
    """One line per row; `x cuBLAS` is against the cuBLAS of the row's own dtype. A dtype
    column appears when some row is not fp32 (runs before fp16 print as they always did)."""
    mixed = any(r.get("dtype", "fp32") != "fp32" for r in results)

    def dtype(text: str) -> str:
        return f"{text:5s} " if mixed else ""

    lines = [f"{'kernel':28s} {dtype('dtype')}{'GFLOP/s':>9s} {'x cuBLAS':>8s} {'rel err':>8s} "
             f"{'ld/st conflicts':>20s} {'races':>5s}"]  # fmt: skip
    for r in results:
        err = "-" if r["max_rel_err"] is None else f"{r['max_rel_err']:.1e}"
        conf = f"{r['ld_conflicts']!s}/{r['st_conflicts']!s}"
        lines.append(f"{r['kernel']:28s} {dtype(r.get('dtype', 'fp32'))}{r['gflops']:9.0f} "
                     f"{r['fraction_of_cublas']:8.2f} {err:>8s} {conf:>20s} "
                     f"{r['racecheck_hazards']!s:>5}")  # fmt: skip
    return "\n".join(lines)


def add_parser(topics) -> None:
    p = topics.add_parser(
        "smem-gemm",
        help="(CUDA + CuPy; ncu, compute-sanitizer) fp32 GEMM from naive to register-blocked",
        description="Each step of minirt.bench.smem_gemm (naive, shared-memory tiles, the "
        "transposed tile with and without bank conflicts, swizzled, register-blocked, templated) "
        "timed against cuBLAS SGEMM at SIZE^3 and checked against it; bank conflicts per kernel "
        "under one ncu process and racecheck of the tiled kernel with and without its second "
        "barrier, where those tools exist. Writes OUT/<gpu>/smem-gemm-<date>.json.",
    )
    add_out(p)
    p.add_argument("--size", type=int, default=4096, help="M = N = K (default: 4096)")


def main(args, command: str) -> Path:
    from minirt.results import load_results

    path = run(args.out, command, size=args.size)
    record = load_results(path)
    print(summary(record["results"]))
    for note in record["config"]["notes"]:
        print(f"note: {note}")
    return path


if __name__ == "__main__":  # the process ncu or compute-sanitizer watches: `ncu|racecheck SIZE K..`
    launch_each_once(sys.argv[3:], int(sys.argv[2]))
