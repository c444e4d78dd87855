import pytest
import torch

from minirt.kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_ref
from minirt.model.layers import RotaryEmbedding


def _inputs(tokens, heads, kv_heads, head_dim, dtype, device):
    g = torch.Generator().manual_seed(0)
    table = RotaryEmbedding(head_dim, 512, 10000.0).to(device)
    positions = torch.randint(0, 512, (tokens,), generator=g).to(device)
    qkv = (torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=g) * 3).to(
        device, dtype
    )
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)  # views of a packed output
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    qw = (1 + 0.1 * torch.randn(head_dim, generator=g)).to(device, dtype)
    kw = (1 + 0.1 * torch.randn(head_dim, generator=g)).to(device, dtype)
    return positions, q, k, qw, kw, 1e-6, table.cos, table.sin


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(4, 2, 16), (3, 1, 32)])
def test_qk_norm_rope_matches_the_reference(heads, kv_heads, head_dim):
    args = _inputs(7, heads, kv_heads, head_dim, torch.float32, "cpu")
    for out, ref in zip(qk_norm_rope(*args), qk_norm_rope_ref(*args), strict=True):
        torch.testing.assert_close(out, ref)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_qk_norm_rope_on_cuda(dtype):
    args = _inputs(65, 16, 8, 128, dtype, "cuda")
    few_ulp = dict(rtol=4e-3, atol=1e-3) if dtype == torch.float16 else dict(rtol=3e-2, atol=1e-2)
    for out, ref in zip(qk_norm_rope(*args), qk_norm_rope_ref(*args), strict=True):
        torch.testing.assert_close(out, ref, **few_ulp)
