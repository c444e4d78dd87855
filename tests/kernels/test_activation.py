import pytest
import torch

from minirt.kernels.activation import silu_mul, silu_mul_ref

FEW_ULP = {torch.float16: dict(rtol=4e-3, atol=1e-4), torch.bfloat16: dict(rtol=3e-2, atol=1e-3)}


@pytest.mark.parametrize("shape", [(3, 40), (1, 1030)])
def test_silu_mul_matches_the_reference(shape):
    g = torch.Generator().manual_seed(0)
    gate, up = torch.randn(shape, generator=g) * 4, torch.randn(shape, generator=g)
    torch.testing.assert_close(silu_mul(gate, up), silu_mul_ref(gate, up), rtol=1e-6, atol=1e-6)


def test_silu_mul_reads_the_two_halves_of_a_packed_projection_in_place():
    packed = torch.randn(5, 2 * 40, generator=torch.Generator().manual_seed(3))
    gate, up = packed.chunk(2, dim=-1)  # strided views, as MLP passes them
    torch.testing.assert_close(silu_mul(gate, up), silu_mul_ref(gate, up), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_silu_mul_on_cuda(dtype):
    g = torch.Generator().manual_seed(1)
    gate = (torch.randn(37, 3072, generator=g) * 4).to("cuda", dtype)
    up = torch.randn(37, 3072, generator=g).to("cuda", dtype)
    out, ref = silu_mul(gate, up), silu_mul_ref(gate, up)
    assert out.dtype == dtype
    # a few ulp: the exponential is the hardware's approximate one on both sides, not the same one
    torch.testing.assert_close(out, ref, **FEW_ULP[dtype])
