import pytest
import torch

from minirt.kernels.scaled_gemm import scaled_gemm, scaled_gemm_ref
from minirt.quant.formats import quantize_fp8, quantize_int8_rows, to_fp8

from .conftest import rel_error

# Codes are made on the host (the interpreter's in-kernel fp8 casts are not faithful); the kernel
# only multiplies them. Small cases run under the interpreter on a CPU, compiled on a GPU.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.on_gpu_too  # the GPU pass of ./workbench test runs it on CUDA


def _case(fmt, m, n, k, static, seed):
    g = torch.Generator().manual_seed(seed)
    w, x = torch.randn(n, k, generator=g), torch.randn(m, k, generator=g) * 3
    if fmt == "int8":
        (xq, xs), (wq, ws) = quantize_int8_rows(x), quantize_int8_rows(w)
    else:
        q = quantize_fp8(w)
        wq, ws = q.data, q.scales
        xs = x.abs().amax().reshape(1) / 448 if static else x.abs().amax(-1) / 448  # [1] or [M]
        xq = to_fp8(x, xs.reshape(-1, 1))
    return [t.to(DEVICE) for t in (xq, xs, wq, ws)], x @ w.T


# int8 activations are per token only (quantize_int8_rows); fp8 per token or one static scale
@pytest.mark.parametrize("fmt,static", [("fp8", False), ("fp8", True), ("int8", False)])
@pytest.mark.parametrize("mnk", [(1, 40, 256), (5, 70, 128), (33, 130, 384), (130, 20, 64)])
def test_kernel_matches_the_reference(fmt, static, mnk):
    args, _ = _case(fmt, *mnk, static, seed=sum(mnk))
    out = scaled_gemm(*args, out_dtype=torch.float32)
    assert out.shape == mnk[:2]
    # int8: exact integer sums, then the same fp32 scaling; fp8: sums of exact products, in fp32
    # on a CPU, and on an H100's fp8 tensor cores with fewer accumulator bits than fp32 (DeepSeek-
    # V3's report measured ~14 retained bits; Triton's max_num_imprecise_acc is the knob)
    bound = 2e-3 if fmt == "fp8" and DEVICE == "cuda" else 1e-6
    assert rel_error(out, scaled_gemm_ref(*args, out_dtype=torch.float32)) < bound


@pytest.mark.parametrize("fmt,bound", [("fp8", 0.06), ("int8", 0.02)])
def test_the_quantised_product_is_close_to_full_precision(fmt, bound):
    """E4M3 keeps 3 mantissa bits (~3 % per value), int8 ~7 bits: the errors of a 256-long dot
    product partly cancel, so the product's relative error sits near one value's."""
    args, exact = _case(fmt, 16, 64, 256, False, seed=7)
    assert rel_error(scaled_gemm(*args, out_dtype=torch.float32).cpu(), exact) < bound


def test_mixed_formats_and_bad_scales_are_refused():
    (xq, xs, wq, ws), _ = _case("fp8", 4, 16, 64, False, seed=1)
    with pytest.raises(ValueError, match="float8_e4m3fn or int8 codes for both"):
        scaled_gemm(xq, xs, wq.view(torch.int8), ws)
    with pytest.raises(ValueError, match=r"1 \(static\) or M = 4"):
        scaled_gemm(xq, xs[:2], wq, ws)


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("mnk", [(1, 40, 256), (5, 70, 128), (33, 130, 384), (130, 20, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_dynamic_kernel_quantizes_inside_as_the_reference_does(fmt, mnk, dtype):
    from minirt.kernels.scaled_gemm import scaled_gemm_dynamic, scaled_gemm_dynamic_ref

    m, n, k = mnk
    g = torch.Generator().manual_seed(sum(mnk))
    w, x = torch.randn(n, k, generator=g), (torch.randn(m, k, generator=g) * 3).to(dtype)
    q = quantize_fp8(w)
    wq, ws = quantize_int8_rows(w) if fmt == "int8" else (q.data, q.scales)
    x, wq, ws = x.to(DEVICE), wq.to(DEVICE), ws.to(DEVICE)
    out = scaled_gemm_dynamic(x, wq, ws, out_dtype=torch.float32)
    bound = 2e-3 if fmt == "fp8" and DEVICE == "cuda" else 1e-6
    assert rel_error(out, scaled_gemm_dynamic_ref(x, wq, ws, torch.float32)) < bound
    assert scaled_gemm_dynamic(x, wq, ws).dtype == dtype  # the activations' dtype by default


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("kernel", ["gemv", "gemm"])
def test_the_dynamic_kernels_codes_round_ties_to_even_across_powers_of_two(fmt, kernel):
    """Against an identity weight the product is each activation's code times its row's scale:
    halfway values (17 -> 16, 19 -> 20, 15.5 -> 16 across a power of two; 2.5 -> 2 for int8),
    subnormals, negatives, and a row of zeros."""
    from minirt.kernels.scaled_gemm import scaled_gemm_dynamic, scaled_gemm_dynamic_ref

    qmax = 448.0 if fmt == "fp8" else 127.0
    ties = [17, 19, 15.5, 7.75, 0.5 * (2**-9 + 2**-8), 1.5 * 2**-9, 2.5, 3.5, 0.5, 1.5, qmax - 0.5]
    row = torch.tensor([qmax, *ties, *[-t for t in ties]])  # the scale is exactly 1
    x = torch.zeros(3, 32)
    x[0, : len(row)] = row
    x[1] = torch.linspace(-qmax, qmax / 3, 32)
    eye = torch.eye(32)
    wq, ws = (
        (eye.to(torch.int8), torch.ones(32))
        if fmt == "int8"
        else (eye.to(torch.float8_e4m3fn), torch.ones(32))
    )
    x, wq, ws = x.to(DEVICE), wq.to(DEVICE), ws.to(DEVICE)
    out = scaled_gemm_dynamic(x, wq, ws, out_dtype=torch.float32, config={"kernel": kernel})
    assert torch.equal(out, scaled_gemm_dynamic_ref(x, wq, ws, torch.float32))
    assert out[0, 1:3].tolist() == ([16.0, 20.0] if fmt == "fp8" else [17.0, 19.0])
    assert out[2].abs().sum() == 0


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("mnk", [(1, 4096, 1024), (1, 37, 96), (3, 70, 160)])
@pytest.mark.parametrize("tiles", [{}, {"BLOCK_N": 4, "BLOCK_K": 1024, "num_warps": 8}])
def test_the_gemv_quantizes_each_row_as_the_reference_does(fmt, mnk, tiles):
    """The one-row kernel (no tensor cores): the engine's qkv shape, outputs that do not fill the
    last program, K not a multiple of the tile, and several rows (one a program)."""
    from minirt.kernels.scaled_gemm import scaled_gemm_dynamic, scaled_gemm_dynamic_ref

    m, n, k = mnk
    g = torch.Generator().manual_seed(n + k)
    w, x = torch.randn(n, k, generator=g), (torch.randn(m, k, generator=g) * 3).bfloat16()
    q = quantize_fp8(w)
    wq, ws = quantize_int8_rows(w) if fmt == "int8" else (q.data, q.scales)
    x, wq, ws = x.to(DEVICE), wq.to(DEVICE), ws.to(DEVICE)
    out = scaled_gemm_dynamic(x, wq, ws, torch.float32, config={"kernel": "gemv", **tiles})
    ref = scaled_gemm_dynamic_ref(x, wq, ws, torch.float32)
    # int8: integer sums, exact; fp8: exact products summed in fp32, in another order
    assert rel_error(out, ref) < 1e-6
    assert out.shape == (m, n) and not out.isnan().any()


def test_a_few_rows_take_the_gemv_and_an_unknown_kernel_is_refused():
    from minirt.kernels import scaled_gemm as S

    # K long enough that the two kernels' sums differ; a narrow weight (N < K) keeps the GEMV
    # for more rows than a wide one
    for n, gemv_rows in ((1024, S.GEMV_MAX_ROWS), (256, S.GEMV_MAX_ROWS_NARROW)):
        q = quantize_fp8(torch.randn(n, 1024))
        wq, ws = q.data.to(DEVICE), q.scales.to(DEVICE)
        for rows, kernel in ((gemv_rows, "gemv"), (gemv_rows + 1, "gemm")):
            x = torch.randn(rows, 1024).to(DEVICE)
            chosen = S.scaled_gemm_dynamic(x, wq, ws, torch.float32)
            other = "gemm" if kernel == "gemv" else "gemv"
            assert torch.equal(
                chosen, S.scaled_gemm_dynamic(x, wq, ws, torch.float32, {"kernel": kernel})
            )
            assert not torch.equal(
                chosen, S.scaled_gemm_dynamic(x, wq, ws, torch.float32, {"kernel": other})
            )
    with pytest.raises(ValueError, match='"gemv" .* or "gemm"'):
        S.scaled_gemm_dynamic(x, wq, ws, config={"kernel": "mma"})


def test_decode_batches_take_narrow_tiles_so_that_the_programs_fill_the_gpu():
    from minirt.kernels.scaled_gemm import default_config

    assert default_config(64, 1024)["BLOCK_N"] == 32  # 32 column tiles, not 16
    assert default_config(256, 6144)["BLOCK_N"] == 128  # a wide weight at 256 rows
    assert default_config(4096, 4096)["BLOCK_M"] == 128  # prefill
    # activations quantized inside: each program reads its rows whole first; narrow weights
    # take 16 outputs a program (64 programs for 1,024 outputs), wide ones 64
    assert default_config(1, 1024, dynamic=True)["BLOCK_N"] == 16
    assert default_config(16, 6144, dynamic=True)["BLOCK_N"] == 64


@pytest.mark.parametrize("fmt", [torch.float8_e4m3fn, torch.int8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_launch_row_quantizer_returns_the_references_codes_and_scales(fmt, dtype):
    """quantize_rows against minirt.quant.formats' torch ops, bit for bit: random rows of a width
    that is not a power of two, a row of ties and subnormals, a row of zeros."""
    from minirt.kernels.scaled_gemm import quantize_rows
    from minirt.quant.formats import quantize_fp8_rows

    g = torch.Generator().manual_seed(11)
    x = torch.randn(6, 1100, generator=g) * 3
    x[4, :6] = torch.tensor([448.0, 17, 19, 15.5, 1.5 * 2**-9, -2.5])
    x[4, 6:] = 0
    x[5] = 0
    x = x.to(dtype)
    ref_q, ref_s = (quantize_int8_rows if fmt == torch.int8 else quantize_fp8_rows)(x)
    q, s = quantize_rows(x.to(DEVICE), fmt)
    assert q.dtype == fmt and s.dtype == torch.float32
    assert torch.equal(s.cpu(), ref_s)
    assert torch.equal(q.cpu().view(torch.int8), ref_q.view(torch.int8))
