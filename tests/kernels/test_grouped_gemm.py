"""grouped_gemm (Triton, under TRITON_INTERPRET=1 on a CPU) and the per-expert loop against
grouped_gemm_ref, including empty groups, groups smaller than a tile and strided weights."""

import pytest
import torch

from minirt.kernels.grouped_gemm import (
    grouped_gemm,
    grouped_gemm_loop,
    grouped_gemm_ref,
    tile_map,
)

from .conftest import rel_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.on_gpu_too  # the GPU pass of ./workbench test runs it on CUDA
SMALL = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)  # the interpreter is slow: small tiles


def _inputs(counts, k, n, dtype=torch.float32, seed=0, transposed=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(counts), k, generator=g).to(DEVICE, dtype)  # [rows, K]
    if transposed:  # a Linear-style [E, N, K] weight, read through a transposed view
        w = torch.randn(len(counts), n, k, generator=g).to(DEVICE, dtype).transpose(1, 2)
    else:
        w = torch.randn(len(counts), k, n, generator=g).to(DEVICE, dtype)  # [E, K, N]
    offsets = torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()], device=DEVICE)
    return x, w, offsets


@pytest.mark.parametrize(
    "counts,k,n",
    [
        ([3, 0, 17, 1], 24, 20),  # an empty group, one smaller than a tile, one over a tile
        ([0, 0, 5], 16, 16),  # leading empty groups
        ([33, 2], 40, 7),  # K and N off the tile
    ],
)
@pytest.mark.parametrize("transposed", [False, True])
def test_grouped_gemm_matches_the_reference_group_by_group(counts, k, n, transposed):
    x, w, offsets = _inputs(counts, k, n, seed=sum(counts), transposed=transposed)
    ref = grouped_gemm_ref(x, w, offsets)
    for e in range(len(counts)):  # the spec itself, against plain matmuls
        lo, hi = offsets[e].item(), offsets[e + 1].item()
        torch.testing.assert_close(ref[lo:hi], x[lo:hi] @ w[e], rtol=1e-5, atol=1e-5)
    assert rel_error(grouped_gemm(x, w, offsets, **SMALL), ref) < 1e-5
    assert rel_error(grouped_gemm_loop(x, w, offsets), ref) < 1e-5


@pytest.mark.gpu  # Triton's interpreter has no bf16 arithmetic (numpy lacks the type)
@pytest.mark.parametrize("tokens", [16, 1000])
def test_grouped_gemm_matches_on_cuda_at_qwen3_30b_a3b_expert_shapes(tokens):
    g = torch.Generator().manual_seed(tokens)
    experts = torch.randint(0, 128, (tokens * 8,), generator=g)  # 128 experts, top-8
    counts = torch.bincount(experts, minlength=128).tolist()
    x, w, offsets = _inputs(counts, 2048, 1536, dtype=torch.bfloat16, seed=tokens)
    ref = grouped_gemm_ref(x, w, offsets)
    out = grouped_gemm(x, w, offsets)  # default tiles
    assert out.dtype == torch.bfloat16 and rel_error(out, ref) < 8e-3
    assert rel_error(grouped_gemm_loop(x, w, offsets), ref) < 8e-3


def test_tile_map_covers_every_row_once_with_spare_tiles_marked():
    offsets = torch.tensor([0, 3, 3, 20, 21])
    group, row = tile_map(offsets, block_m=8, max_rows=21)
    real = group < 4
    assert group[real].tolist() == [0, 2, 2, 2, 3]  # 1 + 0 + 3 + 1 tiles
    assert row[real].tolist() == [0, 3, 11, 19, 20]
    assert len(group) == 3 + 4 and (group[~real] == 4).all()  # cdiv(21, 8) + groups


def test_bad_shapes_are_refused_with_a_hint():
    x, w, offsets = _inputs([2, 2], 8, 8)
    with pytest.raises(ValueError, match="groups \\+ 1"):
        grouped_gemm_ref(x, w, offsets[:-1])
    with pytest.raises(ValueError, match="transpose"):
        grouped_gemm(x, w[0], offsets)
