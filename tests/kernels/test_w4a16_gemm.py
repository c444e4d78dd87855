import pytest
import torch

from minirt.kernels.w4a16_gemm import bf16x2_available, w4a16_gemm, w4a16_gemm_ref
from minirt.quant.formats import Int4Weight, dequantize_int4, interleave_int4, quantize_int4

from .conftest import rel_error

# Small cases run under the interpreter on a CPU and compiled on a GPU machine.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.on_gpu_too  # the GPU pass of ./workbench test runs it on CUDA
# The kernel dequantises exactly as the reference does (fp32) and sums in fp32: only the order of
# the sums differs. On a GPU the GEMM's tensor cores take the codes minus their zero (exact) and x
# as it is; the GEMV's PTX path rounds its products to bf16.
BOUND = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32


def _case(m, n, k, group_size, symmetric, seed):
    g = torch.Generator().manual_seed(seed)
    q = quantize_int4(torch.randn(n, k, generator=g), group_size, symmetric, interleaved=True)
    x = torch.randn(m, k, generator=g).to(DEVICE, DTYPE)  # [M, K]
    zeros = q.zeros.to(DEVICE) if q.zeros is not None else None
    return x, Int4Weight(q.packed.to(DEVICE), q.scales.to(DEVICE), zeros, q.shape, group_size, True)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [32, 128])
@pytest.mark.parametrize("m", [1, 3, 37])
def test_kernel_matches_the_reference_for_gemv_and_gemm(m, group_size, symmetric):
    args = _case(m, 72, 256, group_size, symmetric, seed=m + group_size)
    out = w4a16_gemm(*args)
    assert out.shape == (m, 72) and out.dtype == DTYPE
    assert rel_error(out, w4a16_gemm_ref(*args)) < BOUND[DTYPE]


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("m", [1, 2, 5, 16, 32])
def test_the_gemm_takes_decode_batches_on_its_narrow_tiles(m, symmetric):
    """The decode defaults (`default_config`): 16- or 32-row tiles padded past M, 16-32 outputs
    a program, K tiles of whole groups; a one-row x through the GEMM too."""
    for n in (40, 4096):  # narrow and wide weights take different tiles
        args = _case(m, n, 256, 32, symmetric, seed=10 * m + symmetric)
        out = w4a16_gemm(*args, config={"kernel": "gemm"})
        assert out.shape == (m, n) and rel_error(out, w4a16_gemm_ref(*args)) < BOUND[DTYPE]


@pytest.mark.parametrize("split_k", [1, 2, 3, 8])
def test_split_k_slices_sum_to_the_same_gemv(split_k):
    """K = 512 in slices of BLOCK_K = 64: 3 slices do not divide it evenly, 8 leave none spare."""
    args = _case(1, 40, 512, 32, False, seed=split_k)
    config = {"kernel": "gemv", "SPLIT_K": split_k, "BLOCK_K": 64, "BLOCK_N": 16}
    assert rel_error(w4a16_gemm(*args, config=config), w4a16_gemm_ref(*args)) < BOUND[DTYPE]


def test_an_unknown_kernel_is_refused():
    args = _case(2, 16, 64, 32, True, seed=4)
    with pytest.raises(
        ValueError, match=r"'gemv' \(a row of x a program\) or 'gemm'; got 'marlin'"
    ):
        w4a16_gemm(*args, config={"kernel": "marlin"})


@pytest.mark.parametrize("split_k", [1, 2])
@pytest.mark.parametrize(("m", "block_m"), [(2, 1), (3, 2), (4, 4), (5, 4)])
def test_the_gemv_takes_several_rows_of_x_each_word_read_once_for_block_m_rows(m, block_m, split_k):
    """BLOCK_M rows of x a program (the last block padded past M), split over K or not: every
    row's outputs land in its own row of y; GEMV_MAX_ROWS picks the GEMV without being asked."""
    from minirt.kernels import w4a16_gemm as W

    args = _case(m, 40, 256, 32, False, seed=20 + m)
    ref = w4a16_gemm_ref(*args)
    config = {
        "kernel": "gemv",
        "BLOCK_M": block_m,
        "SPLIT_K": split_k,
        "BLOCK_K": 128,
        "BLOCK_N": 16,
    }
    out = w4a16_gemm(*args, config=config)
    assert out.shape == (m, 40) and rel_error(out, ref) < BOUND[DTYPE]
    for r in range(m):  # no row's sums in another's place
        assert rel_error(out[r], ref[r]) < BOUND[DTYPE]
    if split_k == 1 and block_m == 1:  # the default dispatch follows use_gemv
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(W, "use_gemv", lambda m, n, k: True)
            assert torch.equal(w4a16_gemm(*args), w4a16_gemm(*args, config={"kernel": "gemv"}))
            mp.setattr(W, "use_gemv", lambda m, n, k: False)
            assert torch.equal(w4a16_gemm(*args), w4a16_gemm(*args, config={"kernel": "gemm"}))


def test_the_gemv_runs_where_the_h100_timed_it_ahead_of_the_gemm():
    """Wide weights (qkv 4096 x 1024): the GEMV up to 4 rows, all in one program; narrow ones
    (down 1024 x 3072): up to 8 rows, a quarter of them a program."""
    from minirt.kernels import w4a16_gemm as W

    assert W.use_gemv(4, 4096, 1024) and not W.use_gemv(5, 4096, 1024)
    assert W.use_gemv(8, 1024, 3072) and not W.use_gemv(9, 1024, 3072)
    assert [W.gemv_block_m(m, 4096, 1024) for m in (1, 2, 3, 4)] == [1, 2, 4, 4]
    assert [W.gemv_block_m(m, 1024, 3072) for m in (1, 4, 5, 8, 16)] == [1, 1, 2, 2, 4]
    assert W.default_config("gemv", 8, 1024, 3072)["BLOCK_M"] == 2


def test_reference_is_the_dequantised_weight_times_x():
    x, q = _case(4, 16, 64, 32, True, seed=1)
    gptq = quantize_int4(torch.randn(16, 64, generator=torch.Generator().manual_seed(1)), 32, True)
    w = dequantize_int4(gptq).to(DEVICE)  # the GPTQ-order twin of q: the same weight
    torch.testing.assert_close(w4a16_gemm_ref(x.float(), q), x.float() @ w.T)


def test_a_wrong_layout_is_refused_with_what_to_do():
    x, q = _case(2, 16, 64, 32, True, seed=2)
    with pytest.raises(ValueError, match=r"K = 64 \(the weight's in_features\)"):
        w4a16_gemm(x[:, :32], q)
    with pytest.raises(ValueError, match="quantise with minirt.quant.quantize_int4"):
        w4a16_gemm(x, Int4Weight(q.packed, q.scales, None, q.shape, 16, True))
    gptq = Int4Weight(q.packed, q.scales, None, q.shape, 32)  # GPTQ order: not the kernel's
    with pytest.raises(ValueError, match=r"interleave_int4\(q\)"):
        w4a16_gemm(x, gptq)


@pytest.mark.parametrize("block_k", [16, 64, 128, 256])
def test_gemm_pieces_inside_a_group_and_whole_groups_agree(block_k):
    """The GEMM walks K in pieces inside one group: BLOCK_K 16 and 64 are slices of a 128-column
    group, 128 the whole group, and 256 is taken as 128 (a piece never spans two groups' scales):
    the columns x is loaded at must follow the interleaved order in each case."""
    x, q = _case(5, 24, 512, 128, False, seed=block_k)
    config = {"kernel": "gemm", "BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": block_k}
    out = w4a16_gemm(x, q, config=config)
    assert rel_error(out, w4a16_gemm_ref(x, q)) < BOUND[DTYPE]


def test_interleaving_a_gptq_weight_changes_the_words_not_the_product():
    g = torch.Generator().manual_seed(3)
    gptq = quantize_int4(torch.randn(8, 256, generator=g), 32, True)
    q = interleave_int4(gptq)
    assert not torch.equal(q.packed, gptq.packed)
    torch.testing.assert_close(dequantize_int4(q), dequantize_int4(gptq), rtol=0, atol=0)
    x = torch.randn(1, 256, generator=g).to(DEVICE, DTYPE)
    dev = Int4Weight(q.packed.to(DEVICE), q.scales.to(DEVICE), None, q.shape, 32, True)
    assert rel_error(w4a16_gemm(x, dev), w4a16_gemm_ref(x, dev)) < BOUND[DTYPE]


@pytest.mark.gpu
@pytest.mark.parametrize("symmetric", [True, False])
def test_on_hopper_the_bf16_pair_path_and_the_fp32_path_both_match_the_reference(symmetric):
    """bf16 x takes the PTX path (pairs of bf16 codes, products rounded to bf16); fp16 x the
    portable fp32 one. Both within the bf16 bound on a Llama-sized GEMV, with fresh inputs."""
    x, q = _case(1, 4096, 4096, 128, symmetric, seed=7 + symmetric)
    assert bf16x2_available(x) == (torch.cuda.get_device_capability() >= (9, 0))
    ref = w4a16_gemm_ref(x, q)
    for config in ({}, {"BLOCK_N": 4, "BLOCK_K": 4096, "num_warps": 2}, {"SPLIT_K": 4}):
        config = {"kernel": "gemv", **config}
        assert rel_error(w4a16_gemm(x, q, config=config), ref) < BOUND[torch.bfloat16]
        half = w4a16_gemm(x.half(), q, config=config).to(ref.dtype)
        assert rel_error(half, ref) < BOUND[torch.bfloat16]
