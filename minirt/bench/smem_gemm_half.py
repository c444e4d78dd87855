"""The fp16 half of the shared-memory GEMM series: the same steps with __half A, B and C.

Products and sums stay in fp32 (only C is rounded to half), so what changes is memory: an element
is 2 bytes, two of them share one 4-byte bank word, and the layouts that conflicted for fp32
conflict differently here. Every comment says what changes from the fp32 step of the same
number (`minirt.bench.smem_gemm`); the conflict counts are re-derived with
`minirt.tools.bank.simulate` in tests/bench/test_smem_gemm.py. Notebook 09.
"""

from __future__ import annotations

# every kernel: C [M, N] = A [M, K] @ B [K, N], all row-major fp16; the sums are fp32
HALF_ARGS = ("const __half *__restrict__ A, const __half *__restrict__ B, "
             "__half *__restrict__ C, int M, int N, int K")  # fmt: skip

# Steps 2h-5h: the fp32 steps' 32 x 32 blocks and tiles. A row of a 32 x 32 half tile is 64
# bytes, 16 banks: two rows fill the 32 banks that one fp32 row filled.
SIMPLE_H = f"""
#include <cuda_fp16.h>

// step 2h, tiled_h: step 2 on halves. A warp stores As[ty][0..31]: 32 halves in 16 words, two
// threads per word. That is no conflict: two threads writing different halves of one word are
// served together, as two reading one word are (broadcast). Bs[k][0..31] reads the same way.
// __half2float makes each product fp32, and acc stays fp32: only C is rounded to half.
extern "C" __global__ void tiled_h({HALF_ARGS}) {{
    __shared__ __half As[32][32], Bs[32][32];
    const int ty = threadIdx.y, tx = threadIdx.x;
    const int row = blockIdx.y * 32 + ty, col = blockIdx.x * 32 + tx;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += 32) {{
        As[ty][tx] = A[(long long)row * K + k0 + tx];
        Bs[ty][tx] = B[(long long)(k0 + ty) * N + col];
        __syncthreads();
        for (int k = 0; k < 32; ++k) acc += __half2float(As[ty][k]) * __half2float(Bs[k][tx]);
        __syncthreads();
    }}
    C[(long long)row * N + col] = __float2half(acc);
}}

// step 4h, tiled_transposed_*_h: step 4's transposed B tile, Bt[col][k], in halves. A warp
// reads (and stores) Bt[tx][k], one column. WIDTH 32: a row is 16 words, so row tx starts at
// bank 16 * (tx % 2): the even rows all hit one bank, the odd rows another, 16 distinct words
// each, a 16-way conflict (fp32's rows of 32 words made it 32-way). WIDTH 33, one half of
// padding as fp32 padded by one float: a row is 16.5 words, so at k = 0 the even rows take
// banks 0-15 and the odd rows 16-31, conflict-free; but at odd k the odd rows' halves spill
// into the next word, one bank further, and row 31 wraps round to bank 0, row 0's: 2-way on
// every odd k. WIDTH 34 pads by one whole word: 17 words a row, an odd stride, so 32 rows
// hit 32 banks at every k, conflict-free. Padding must be counted in words, not elements.
// (ptxas merges neighbouring k where alignment allows: WIDTH 32 reads Bt[tx][k..k+3] as one
// 8-byte LDS.64, still 16 wavefronts where 2 would do; WIDTH 34 two k per 32-bit LDS; WIDTH 33
// none, its odd rows are not word-aligned. The counts in smem_gemm.ADDRESS_CONFLICTS use these.)
#define TILED_TRANSPOSED_H(NAME, WIDTH)                                             \\
extern "C" __global__ void NAME({HALF_ARGS}) {{                                      \\
    __shared__ __half As[32][32], Bt[32][WIDTH];                                    \\
    const int ty = threadIdx.y, tx = threadIdx.x;                                   \\
    const int row = blockIdx.y * 32 + ty, col = blockIdx.x * 32 + tx;               \\
    float acc = 0.f;                                                                \\
    for (int k0 = 0; k0 < K; k0 += 32) {{                                            \\
        As[ty][tx] = A[(long long)row * K + k0 + tx];                               \\
        Bt[tx][ty] = B[(long long)(k0 + ty) * N + col];                             \\
        __syncthreads();                                                            \\
        for (int k = 0; k < 32; ++k)                                                \\
            acc += __half2float(As[ty][k]) * __half2float(Bt[tx][k]);               \\
        __syncthreads();                                                            \\
    }}                                                                               \\
    C[(long long)row * N + col] = __float2half(acc);                                \\
}}
TILED_TRANSPOSED_H(tiled_transposed_conflict_h, 32)
TILED_TRANSPOSED_H(tiled_transposed_pad1_h, 33)
TILED_TRANSPOSED_H(tiled_transposed_pad_h, 34)

// step 5h, swizzled_h: step 5's XOR swizzle, but on words, not on elements. Element (r, c)
// lives at column c ^ (r & 30): the word index c / 2 is XORed with r / 2 (CuTe's
// Swizzle<4, 1, 5> on half offsets: 4 bits, because a row is 16 words; M = 1 keeps the two
// halves of a word together, so halves (r, 2j) and (r, 2j + 1) stay neighbours). The 16 even
// rows land on 16 different banks of the first 16, the odd rows on the other 16: conflict-free,
// no padding.
extern "C" __global__ void swizzled_h({HALF_ARGS}) {{
    __shared__ __half As[32][32], Bt[32][32];
    const int ty = threadIdx.y, tx = threadIdx.x;
    const int row = blockIdx.y * 32 + ty, col = blockIdx.x * 32 + tx;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += 32) {{
        As[ty][tx] = A[(long long)row * K + k0 + tx];
        Bt[tx][ty ^ (tx & 30)] = B[(long long)(k0 + ty) * N + col];
        __syncthreads();
        for (int k = 0; k < 32; ++k)
            acc += __half2float(As[ty][k]) * __half2float(Bt[tx][k ^ (tx & 30)]);
        __syncthreads();
    }}
    C[(long long)row * N + col] = __float2half(acc);
}}
"""

# Steps 6h-7h: the fp32 body (smem_gemm.REGBLOCK_BODY) with halves in shared memory. The thread
# map is the same; what changes is the width of every vector. Four halves are 8 bytes (one
# HalfN<4> below), so a global load moves 4 halves where fp32's moved 4 floats in 16
# bytes, and the TM = 8 halves of A a thread reads per k are 16 bytes: one LDS.128 where fp32
# needed two. B's TN = 8 halves likewise: the warp's 16 threads read 16 neighbouring 16-byte
# pieces, a quarter-warp 128 contiguous bytes, conflict-free where fp32's 32-byte stride was
# 2-way. The transposed stores of A stay 2-way, as in fp32: the two threads of a row store to
# rows aCol + i and aCol + 4 + i of As, 4 * BM halves apart, a multiple of 128 bytes. Values are
# widened to fp32 as they leave shared memory: TM + TN conversions feed TM * TN fp32 FMAs.
REGBLOCK_H_BODY = """
    constexpr int THREADS = (BM / TM) * (BN / TN);
    static_assert(BK % 4 == 0 && BN % 4 == 0 && TN % 4 == 0, "HalfN<4> loads and stores");
    static_assert(THREADS % (BK / 4) == 0 && THREADS % (BN / 4) == 0, "whole rows per pass");
    __shared__ __align__(16) __half As[BK * BM];  // [BK][BM]: the A tile, transposed
    __shared__ __align__(16) __half Bs[BK * BN];  // [BK][BN]
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int tRow = threadIdx.x / (BN / TN) * TM, tCol = threadIdx.x % (BN / TN) * TN;
    const int aRow = threadIdx.x / (BK / 4), aCol = threadIdx.x % (BK / 4) * 4;
    const int bRow = threadIdx.x / (BN / 4), bCol = threadIdx.x % (BN / 4) * 4;
    float acc[TM][TN] = {};
    float a[TM], b[TN];
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int r = aRow; r < BM; r += THREADS / (BK / 4)) {
            const HalfN<4> v =
                *reinterpret_cast<const HalfN<4> *>(&A[(long long)(row0 + r) * K + k0 + aCol]);
            As[(aCol + 0) * BM + r] = v.h[0];
            As[(aCol + 1) * BM + r] = v.h[1];
            As[(aCol + 2) * BM + r] = v.h[2];
            As[(aCol + 3) * BM + r] = v.h[3];
        }
        for (int r = bRow; r < BK; r += THREADS / (BN / 4))
            *reinterpret_cast<HalfN<4> *>(&Bs[r * BN + bCol]) =
                *reinterpret_cast<const HalfN<4> *>(&B[(long long)(k0 + r) * N + col0 + bCol]);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            const HalfN<TM> av = *reinterpret_cast<const HalfN<TM> *>(&As[k * BM + tRow]);
            const HalfN<TN> bv = *reinterpret_cast<const HalfN<TN> *>(&Bs[k * BN + tCol]);
#pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = __half2float(av.h[i]);
#pragma unroll
            for (int j = 0; j < TN; ++j) b[j] = __half2float(bv.h[j]);
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
        for (int j = 0; j < TN; j += 4) {
            HalfN<4> v;
#pragma unroll
            for (int u = 0; u < 4; ++u) v.h[u] = __float2half(acc[i][j + u]);
            const long long at = (long long)(row0 + tRow + i) * N + col0 + tCol + j;
            *reinterpret_cast<HalfN<4> *>(&C[at]) = v;
        }
"""

REGBLOCK_H = f"""
// N halves moved as one access of 2N bytes (the role float4 plays for fp32): HalfN<4> is one
// 64-bit access, HalfN<8> one 128-bit. Spelt out, because the compiler on its own splits a
// thread's 8 halves into two 64-bit loads, and two 64-bit loads of B are 2-way conflicted.
template <int N> struct __align__(2 * N) HalfN {{ __half h[N]; }};

// step 6h, regblock_h: step 6 on halves, 128 x 128 tiles of C, K in steps of 8, 8 x 8 per thread.
extern "C" __global__ void __launch_bounds__(256) regblock_h({HALF_ARGS}) {{
    constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
{REGBLOCK_H_BODY}}}

// step 7h, templated_h: the half body as a template, instantiated by name as step 7.
template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) templated_h({HALF_ARGS}) {{
{REGBLOCK_H_BODY}}}
"""

# Step 8h: tensor cores. Everything above runs on the CUDA cores, one fp32 FMA per thread per
# instruction; cuBLAS HGEMM runs on the tensor cores, where one warp-wide mma multiplies whole
# 16 x 16 x 16 tiles. WMMA (nvcuda::wmma, <mma.h>) is the portable C++ door to them.
WMMA_H = f"""
#include <mma.h>

// step 8h, wmma_h: tensor cores through WMMA. A block of 4 warps computes a 64 x 64 tile of C,
// each warp 32 x 32 of it as 2 x 2 accumulator fragments of 16 x 16 fp32. Per 16 of K a warp
// loads two 16 x 16 half fragments of A and two of B from shared memory (load_matrix_sync,
// which compiles to ldmatrix) and issues 4 mma_sync, each 16 x 16 x 16 = 4096 multiply-adds
// for the whole warp, where a CUDA-core FMA instruction does 32. Rows are padded by 8 halves
// (16 bytes): ldmatrix reads 16 bytes from each of 8 rows, and rows of 80 (A) or 144 (B)
// bytes put those 8 pieces on 8 different groups of 4 banks, where the unpadded 64 and 128
// bytes would put them on 2 and 1 (4-way and 8-way conflicts). load_matrix_sync also wants a
// leading dimension that is a multiple of 8 halves, and 32-byte aligned tile pointers. The
// price: a quarter-warp's 16-byte stores of A cover two 64-byte row pieces 80 bytes apart,
// which overlap in 4 banks (2-way); no padding is right for both, a swizzle would be (CUTLASS).
// Cs rows of 40 floats keep the fp32 fragment stores conflict-free. No double buffering, no
// async copies: this is the first step, not cuBLAS.
extern "C" __global__ void __launch_bounds__(128) wmma_h({HALF_ARGS}) {{
    using namespace nvcuda;
    constexpr int BM = 64, BN = 64, BK = 32, PAD = 8;
    __shared__ __align__(32) __half As[BM][BK + PAD];  // [64][40]: 80-byte rows
    __shared__ __align__(32) __half Bs[BK][BN + PAD];  // [32][72]: 144-byte rows
    __shared__ __align__(32) float Cs[4][32][32 + 8];  // each warp's fp32 C, before rounding
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm = warp / 2 * 32, wn = warp % 2 * 32;  // this warp's 32 x 32 of the block tile
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
    for (int k0 = 0; k0 < K; k0 += BK) {{
        // 64 x 32 halves of A and 32 x 64 of B, 8 halves (16 bytes) per thread per copy
        for (int v = threadIdx.x; v < BM * BK / 8; v += 128) {{
            const int r = v / (BK / 8), c = v % (BK / 8) * 8;
            *reinterpret_cast<uint4 *>(&As[r][c]) =
                *reinterpret_cast<const uint4 *>(&A[(long long)(row0 + r) * K + k0 + c]);
        }}
        for (int v = threadIdx.x; v < BK * BN / 8; v += 128) {{
            const int r = v / (BN / 8), c = v % (BN / 8) * 8;
            *reinterpret_cast<uint4 *>(&Bs[r][c]) =
                *reinterpret_cast<const uint4 *>(&B[(long long)(k0 + r) * N + col0 + c]);
        }}
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {{
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b[2];
#pragma unroll
            for (int i = 0; i < 2; ++i)
                wmma::load_matrix_sync(a[i], &As[wm + 16 * i][kk], BK + PAD);
#pragma unroll
            for (int j = 0; j < 2; ++j)
                wmma::load_matrix_sync(b[j], &Bs[kk][wn + 16 * j], BN + PAD);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }}
        __syncthreads();
    }}
    // Which thread holds which element of a fragment is unspecified, so the fp32 sums go
    // through shared memory, and each lane rounds and writes whole rows of C (coalesced).
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(&Cs[warp][16 * i][16 * j], acc[i][j], 32 + 8,
                                    wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 32 * 32; e += 32) {{
        const int r = e / 32, c = e % 32;
        C[(long long)(row0 + wm + r) * N + col0 + wn + c] = __float2half(Cs[warp][r][c]);
    }}
}}
"""

HALF_SOURCE = SIMPLE_H + REGBLOCK_H + WMMA_H
HALF_SHAPES = ((128, 128, 16, 8, 8), (64, 64, 8, 4, 4))
