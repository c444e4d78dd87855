import pytest
import torch

from minirt.kernels.rotary import rope, rope_ref
from minirt.model.layers import RotaryEmbedding


def _inputs(tokens, heads, kv_heads, head_dim, dtype, device):
    g = torch.Generator().manual_seed(0)
    table = RotaryEmbedding(head_dim, 512, 10000.0).to(device)
    positions = torch.randint(0, 512, (tokens,), generator=g).to(device)
    q = torch.randn(tokens, heads, head_dim, generator=g).to(device, dtype)
    k = torch.randn(tokens, kv_heads, head_dim, generator=g).to(device, dtype)
    return positions, q, k, table.cos, table.sin


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(4, 2, 16), (3, 1, 32)])
def test_rope_matches_the_reference(heads, kv_heads, head_dim):
    args = _inputs(7, heads, kv_heads, head_dim, torch.float32, "cpu")
    for out, ref in zip(rope(*args), rope_ref(*args), strict=True):
        torch.testing.assert_close(out, ref)


def test_rope_keeps_each_pair_norm():
    pos, q, k, cos, sin = _inputs(5, 4, 2, 16, torch.float32, "cpu")
    rq, _ = rope(pos, q, k, cos, sin)
    pairs = lambda x: x[..., :8] ** 2 + x[..., 8:] ** 2  # noqa: E731
    torch.testing.assert_close(pairs(rq), pairs(q))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rope_on_cuda(dtype):
    args = _inputs(65, 16, 8, 128, dtype, "cuda")
    for out, ref in zip(rope(*args), rope_ref(*args), strict=True):
        torch.testing.assert_close(out, ref)
