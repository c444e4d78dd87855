import pytest
import torch

from minirt.kernels.w4a16_gemm import w4a16_gemm, w4a16_gemm_ref
from minirt.quant.formats import dequantize_int4, quantize_int4

from .conftest import rel_error

# Small cases run under the interpreter on a CPU and compiled on a GPU machine.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The kernel dequantises exactly as the reference does (fp32) and sums in fp32: only the order of
# the sums differs. On a GPU the GEMM's tensor cores take the weights rounded to x's 16-bit type.
BOUND = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32


def _case(m, n, k, group_size, symmetric, seed):
    g = torch.Generator().manual_seed(seed)
    q = quantize_int4(torch.randn(n, k, generator=g), group_size, symmetric)
    x = torch.randn(m, k, generator=g).to(DEVICE, DTYPE)  # [M, K]
    to = {"device": DEVICE}
    zeros = q.zeros.to(**to) if q.zeros is not None else None
    return x, q.packed.to(**to), q.scales.to(**to), zeros, group_size


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [32, 128])
@pytest.mark.parametrize("m", [1, 3, 37])
def test_kernel_matches_the_reference_for_gemv_and_gemm(m, group_size, symmetric):
    args = _case(m, 72, 256, group_size, symmetric, seed=m + group_size)
    out = w4a16_gemm(*args)
    assert out.shape == (m, 72) and out.dtype == DTYPE
    assert rel_error(out, w4a16_gemm_ref(*args)) < BOUND[DTYPE]


@pytest.mark.parametrize("split_k", [1, 2, 3, 8])
def test_split_k_slices_sum_to_the_same_gemv(split_k):
    """K = 512 in slices of BLOCK_K = 64: 3 slices do not divide it evenly, 8 leave none spare."""
    args = _case(1, 40, 512, 32, False, seed=split_k)
    out = w4a16_gemm(*args, config={"SPLIT_K": split_k, "BLOCK_K": 64, "BLOCK_N": 16})
    assert rel_error(out, w4a16_gemm_ref(*args)) < BOUND[DTYPE]


def test_reference_is_the_dequantised_weight_times_x():
    x, packed, scales, zeros, gs = _case(4, 16, 64, 32, True, seed=1)
    q = quantize_int4(torch.randn(16, 64, generator=torch.Generator().manual_seed(1)), 32, True)
    w = dequantize_int4(q).to(DEVICE)
    torch.testing.assert_close(
        w4a16_gemm_ref(x.float(), packed, scales, zeros, gs), x.float() @ w.T
    )


def test_a_wrong_layout_is_refused_with_what_to_do():
    x, packed, scales, zeros, gs = _case(2, 16, 64, 32, True, seed=2)
    with pytest.raises(ValueError, match=r"K = 8 x packed.shape\[1\] = 64"):
        w4a16_gemm(x[:, :32], packed, scales, zeros, gs)
    with pytest.raises(ValueError, match="quantise with minirt.quant.quantize_int4"):
        w4a16_gemm(x, packed, scales, zeros, 16)
