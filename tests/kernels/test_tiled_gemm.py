import pytest
import torch

from minirt.kernels.tiled_gemm import matmul, matmul_naive, matmul_ref, matmul_tiled

from .conftest import rel_error

# ||C - ref|| / ||ref||. Every kernel sums in fp32 and rounds once, like the reference, so the
# only differences are the order of the fp32 sums (~1e-7 x sqrt(K)) and, for 16-bit outputs, a
# rounding that lands on the other side: at most one ulp of C (fp16 2^-10, bf16 2^-7 relative),
# rarely, so the norm-wise error stays well under one ulp.
REL_ERR_BOUND = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}

STEPS = {
    "naive": lambda a, b: matmul_naive(a, b, BLOCK_M=16, BLOCK_N=16),
    "tiled": matmul_tiled,
    "row_major": lambda a, b: matmul(a, b, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=1),
    "grouped": lambda a, b: matmul(a, b, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2),
}


# the small cases run under the interpreter on a CPU and as compiled kernels on a GPU machine
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.on_gpu_too  # the GPU pass of ./workbench test runs it on CUDA


def _inputs(m, n, k, dtype=torch.float32, device=DEVICE, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g).to(device, dtype)  # [M, K]
    b = torch.randn(k, n, generator=g).to(device, dtype)  # [K, N]
    return a, b


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("mnk", [(16, 24, 40), (37, 19, 5), (80, 48, 33)])
def test_every_step_matches_the_reference_including_sizes_off_the_tile(step, mnk):
    a, b = _inputs(*mnk, seed=sum(mnk))
    out = STEPS[step](a, b)
    assert out.shape == (mnk[0], mnk[1]) and out.dtype == torch.float32
    assert rel_error(out, matmul_ref(a, b)) < REL_ERR_BOUND[torch.float32]


def test_a_transposed_view_is_read_through_its_strides():
    a, b = _inputs(24, 40, 16, seed=3)
    bt = b.t().contiguous().t()  # same values, column-major storage
    assert rel_error(matmul(a, bt, 16, 16, 16, 2), matmul_ref(a, b)) < 1e-5


def test_matmul_ref_is_the_fp32_product():
    a, b = _inputs(8, 8, 8)
    torch.testing.assert_close(matmul_ref(a, b), a @ b)


@pytest.mark.parametrize("fn", [matmul_ref, matmul_naive, matmul_tiled, matmul])
def test_mismatched_inner_dimensions_are_refused_with_what_to_do(fn):
    a, b = torch.zeros(4, 5), torch.zeros(6, 3)
    with pytest.raises(ValueError, match=r"inner dimensions differ.*pass B with 5 rows"):
        fn(a, b)


@pytest.mark.parametrize("fn", [matmul_ref, matmul_naive, matmul_tiled, matmul])
def test_inputs_that_are_not_matrices_are_refused_with_what_to_do(fn):
    with pytest.raises(ValueError, match=r"2-D matrices.*reshape"):
        fn(torch.zeros(2, 4, 5), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"2-D matrices"):
        fn(torch.zeros(4, 5), torch.zeros(5))


def test_bad_tile_sizes_and_dtype_mix_are_refused():
    a, b = _inputs(16, 16, 16)
    with pytest.raises(ValueError, match=r"BLOCK_K=8.*use 16"):
        matmul(a, b, BLOCK_K=8)
    with pytest.raises(ValueError, match=r"BLOCK_M=48.*use 64"):
        matmul(a, b, BLOCK_M=48)
    with pytest.raises(ValueError, match=r"GROUP_M=0"):
        matmul(a, b, GROUP_M=0)
    with pytest.raises(ValueError, match=r"cast one"):
        matmul(a, b.double())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_every_step_matches_the_reference_on_cuda_at_1024_cubed(dtype):
    a, b = _inputs(1024, 1024, 1024, dtype, "cuda", seed=7)
    ref = matmul_ref(a, b)
    steps = {
        "naive": matmul_naive(a, b),
        "tiled": matmul_tiled(a, b),
        "default": matmul(a, b),
        "row_major_64": matmul(a, b, 64, 64, 32, GROUP_M=1),
    }
    for name, out in steps.items():
        assert out.dtype == dtype
        err = rel_error(out, ref)
        assert err < REL_ERR_BOUND[dtype], f"{name}: relative error {err:.2e}"


@pytest.mark.gpu
def test_sizes_off_the_tile_on_cuda():
    a, b = _inputs(1000, 1030, 777, torch.float16, "cuda", seed=8)
    assert rel_error(matmul(a, b), matmul_ref(a, b)) < REL_ERR_BOUND[torch.float16]
