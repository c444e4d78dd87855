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


def _store_inputs(tokens, dtype, cache_dtype, device, heads=4, kv_heads=2, head_dim=16):
    positions, q, k, qw, kw, eps, cos, sin = _inputs(tokens, heads, kv_heads, head_dim, dtype,
                                                     device)  # fmt: skip
    g = torch.Generator().manual_seed(1)
    v = (torch.randn(tokens, kv_heads, head_dim, generator=g) * 300).to(device, dtype)
    pool = [torch.full((8, 4, kv_heads, head_dim), 7.0, device=device).to(cache_dtype)
            for _ in range(2)]  # fmt: skip
    slots = torch.randperm(32, generator=g)[:tokens].to(device)
    slots[1] = -1  # a padding row stores nothing
    return positions, q, k, v, qw, kw, eps, cos, sin, *pool, slots


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.float8_e4m3fn])
def test_qk_norm_rope_store_is_norm_rope_then_store(cache_dtype):
    from minirt.kernels.qk_norm_rope import qk_norm_rope_store, qk_norm_rope_store_ref
    from minirt.kernels.store_kv import store_kv

    args = _store_inputs(7, torch.float32, cache_dtype, "cpu")
    ref_args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    parts_args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    q = qk_norm_rope_store(*args)
    torch.testing.assert_close(q, qk_norm_rope_store_ref(*ref_args))
    positions, q0, k0, v0, qw, kw, eps, cos, sin, k_cache, v_cache, slots = parts_args
    q1, k1 = qk_norm_rope(positions, q0, k0, qw, kw, eps, cos, sin)  # the two kernels it fuses
    store_kv(k1, v0, k_cache, v_cache, slots)
    assert torch.equal(q, q1)
    for pool, parts, ref in zip(args[9:11], parts_args[9:11], ref_args[9:11], strict=True):
        assert torch.equal(pool.float(), parts.float())  # bit for bit: the same arithmetic
        torch.testing.assert_close(pool.float(), ref.float())
    assert (args[9].float() == 7).sum() == (8 * 4 - 6) * 2 * 16  # 6 rows stored, padding none


def test_a_replaced_part_turns_the_fused_role_off():
    from dataclasses import replace

    from minirt.kernels.backend import TRITON, get_backend
    from minirt.kernels.store_kv import store_kv_ref

    assert get_backend(TRITON, "cpu").qk_norm_rope_store is TRITON.qk_norm_rope_store
    mine = get_backend(replace(TRITON, store_kv=store_kv_ref), "cpu")
    assert mine.qk_norm_rope_store is None  # the learner's store_kv runs, not the fused kernel
    assert get_backend(replace(TRITON, rms_norm=store_kv_ref), "cpu").qk_norm_rope_store


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.float8_e4m3fn])
def test_qk_norm_rope_store_on_cuda(cache_dtype):
    from minirt.kernels.qk_norm_rope import qk_norm_rope_store, qk_norm_rope_store_ref

    args = _store_inputs(31, torch.bfloat16, cache_dtype, "cuda", 16, 8, 128)
    ref_args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    torch.testing.assert_close(qk_norm_rope_store(*args), qk_norm_rope_store_ref(*ref_args),
                               rtol=3e-2, atol=1e-2)  # fmt: skip
    for pool, ref in zip(args[9:11], ref_args[9:11], strict=True):
        torch.testing.assert_close(pool.float(), ref.float(), rtol=7e-2, atol=2e-2)
