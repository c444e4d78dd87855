import pytest
import torch

from minirt.kernels.rms_norm import rms_norm, rms_norm_ref

# a few ulp: rsqrt is approximate in hardware, and the sum of squares is added in another order
FEW_ULP = {torch.float16: dict(rtol=4e-3, atol=1e-4), torch.bfloat16: dict(rtol=3e-2, atol=1e-3)}


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3).to(device, dtype)
    res = torch.randn(shape, generator=g).to(device, dtype)
    w = (1 + 0.1 * torch.randn(shape[-1], generator=g)).to(device, dtype)
    return x, res, w


@pytest.mark.parametrize("shape", [(5, 64), (3, 4, 16), (2, 100)])
def test_rms_norm_matches_the_reference(shape):
    x, _, w = _inputs(shape, torch.float32, "cpu")
    torch.testing.assert_close(rms_norm(x, w, 1e-6), rms_norm_ref(x, w, 1e-6))


def test_fused_residual_add_returns_the_norm_and_the_new_residual():
    x, res, w = _inputs((6, 48), torch.float32, "cpu")
    out, new_res = rms_norm(x, w, 1e-5, res)
    want_out, want_res = rms_norm_ref(x, w, 1e-5, res)
    torch.testing.assert_close(new_res, x + res)
    torch.testing.assert_close(new_res, want_res)
    torch.testing.assert_close(out, want_out)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rms_norm_on_cuda(dtype):
    x, res, w = _inputs((33, 1024), dtype, "cuda")
    torch.testing.assert_close(rms_norm(x, w, 1e-6), rms_norm_ref(x, w, 1e-6), **FEW_ULP[dtype])
    out, new_res = rms_norm(x, w, 1e-6, res)
    want_out, want_res = rms_norm_ref(x, w, 1e-6, res)
    torch.testing.assert_close(new_res, want_res, rtol=0, atol=0)  # one rounding, both sides
    torch.testing.assert_close(out, want_out, **FEW_ULP[dtype])
    qk, _, wq = _inputs((33, 16, 128), dtype, "cuda", seed=1)  # q-norm: per head
    torch.testing.assert_close(rms_norm(qk, wq, 1e-6), rms_norm_ref(qk, wq, 1e-6), **FEW_ULP[dtype])
