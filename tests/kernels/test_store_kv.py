import pytest
import torch

from minirt.kernels.store_kv import store_kv, store_kv_ref


def _pool(num_blocks=6, block_size=16, kv_heads=2, head_dim=16, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(1)
    shape = (num_blocks, block_size, kv_heads, head_dim)
    return torch.randn(shape, generator=g).to(device, dtype), torch.randn(shape, generator=g).to(
        device, dtype
    )


def _check(device, dtype, num_tokens=20):
    g = torch.Generator().manual_seed(2)
    kc, vc = _pool(dtype=dtype, device=device)
    qkv = torch.randn(num_tokens, 3 * 2 * 16, generator=g).to(device, dtype)
    # k and v as strided views of one fused projection output, like a qkv_proj would give
    k = qkv[:, 32:64].view(num_tokens, 2, 16)
    v = qkv[:, 64:].view(num_tokens, 2, 16)
    slots = torch.randperm(kc.shape[0] * kc.shape[1], generator=g)[:num_tokens].to(device)
    slots[::5] = -1  # padding rows of a CUDA graph batch
    want_k, want_v = kc.clone(), vc.clone()
    store_kv_ref(k, v, want_k, want_v, slots)
    store_kv(k, v, kc, vc, slots)
    assert torch.equal(kc, want_k) and torch.equal(vc, want_v)
    # and the padding rows really stored nothing: only the valid slots changed
    changed = (kc != _pool(dtype=dtype, device=device)[0]).flatten(2).any(-1).flatten()
    assert set(changed.nonzero().flatten().tolist()) <= set(slots[slots >= 0].tolist())


def test_store_kv_writes_the_slots_the_reference_writes_and_skips_padding():
    _check("cpu", torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_store_kv_on_cuda(dtype):
    _check("cuda", dtype, num_tokens=80)
