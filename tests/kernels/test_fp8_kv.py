"""An FP8 (E4M3) KV pool (`kv_cache_dtype="fp8"`): every store saturates at +-448 instead of
overflowing, and every attention reads the stored values upcast. Each implementation must equal
the reference run on the same FP8 pool; the reference on FP8 must stay near the reference on the
full-precision values (E4M3 keeps 3 mantissa bits: ~3 % a value)."""

import pytest
import torch

from minirt.kernels.cpu import decode_attention_cpu, store_kv_cpu
from minirt.kernels.decode_attention import decode_attention, decode_attention_ref
from minirt.kernels.prefill_attention import prefill_attention, prefill_attention_ref
from minirt.kernels.store_kv import FP8_MAX, store_kv, store_kv_ref, to_cache_dtype
from tests.kernels.conftest import TOLERANCE, make_paged, rel_error

F8 = torch.float8_e4m3fn


def fp8(p):
    """The same inputs with the pool rounded to E4M3 (NaN, the unwritten slots, stays NaN)."""
    p.k_cache, p.v_cache = p.k_cache.to(F8), p.v_cache.to(F8)
    return p


@pytest.mark.parametrize("store", [store_kv_ref, store_kv_cpu, store_kv], ids=lambda f: f.__name__)
def test_a_store_into_fp8_saturates_and_rounds_as_the_cast_does(store):
    g = torch.Generator().manual_seed(0)
    k, v = torch.randn(5, 2, 16, generator=g) * 3, torch.randn(5, 2, 16, generator=g)
    k[0, 0, :4] = torch.tensor([1e4, -1e4, 449.0, -600.0])  # past E4M3's range
    caches = [torch.full((4, 4, 2, 16), float("nan"), dtype=F8) for _ in range(2)]
    slots = torch.tensor([3, 0, 9, 15, 6])
    store(k, v, caches[0], caches[1], slots)
    for x, cache in ((k, caches[0]), (v, caches[1])):
        got = cache.view(-1, 2, 16)[slots].float()
        assert torch.equal(got, to_cache_dtype(x, cache).float())
        assert not got.isnan().any() and got.abs().max() <= FP8_MAX
    assert caches[0].view(-1, 2, 16)[3, 0, :4].float().tolist() == [448, -448, 448, -448]
    unwritten = [s for s in range(16) if s not in slots.tolist()]
    assert caches[0].view(-1, 2, 16)[unwritten].float().isnan().all()  # nothing else touched


@pytest.mark.parametrize("attend", [decode_attention, decode_attention_cpu],
                         ids=lambda f: f.__name__)  # fmt: skip
def test_decode_attention_reads_an_fp8_pool_as_the_reference_does(attend):
    p = make_paged([1, 1, 1], [40, 17, 70], heads=4, kv_heads=2, seed=3)
    full = decode_attention_ref(*p.decode_args())
    p = fp8(p)
    ref = decode_attention_ref(*p.decode_args())
    assert rel_error(attend(*p.decode_args()), ref) < TOLERANCE[torch.float32]
    assert 0 < rel_error(ref, full) < 0.08  # FP8's rounding, and only that


def test_prefill_attention_reads_an_fp8_pool_as_the_reference_does():
    p = make_paged([5, 1, 17], [40, 17, 33], heads=4, kv_heads=2, seed=4)
    full = prefill_attention_ref(*p.prefill_args())
    p = fp8(p)
    ref = prefill_attention_ref(*p.prefill_args())
    assert rel_error(prefill_attention(*p.prefill_args()), ref) < TOLERANCE[torch.float32]
    assert 0 < rel_error(ref, full) < 0.08


@pytest.mark.gpu
@pytest.mark.parametrize("seed", [0, 1])
def test_fp8_pool_on_cuda_decode_and_prefill_match_the_reference(seed):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(1, 3000, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g)
    p = make_paged([1] * len(ctx), ctx.tolist(), heads=16, kv_heads=8, head_dim=128,
                   block_size=16, dtype=torch.bfloat16, device="cuda", seed=seed)  # fmt: skip
    p = fp8(p)
    ref = decode_attention_ref(*p.decode_args())
    assert rel_error(decode_attention(*p.decode_args()), ref) < TOLERANCE[torch.bfloat16]
    q = make_paged([7, 33], [300, 64], heads=16, kv_heads=8, head_dim=128, dtype=torch.bfloat16,
                   device="cuda", seed=seed)  # fmt: skip
    q = fp8(q)
    ref = prefill_attention_ref(*q.prefill_args())
    assert rel_error(prefill_attention(*q.prefill_args()), ref) < TOLERANCE[torch.bfloat16]
    k = torch.randn(64, 8, 128, device="cuda", dtype=torch.bfloat16) * 200  # some past 448
    cache = torch.full((8, 16, 8, 128), float("nan"), device="cuda", dtype=F8)
    slots = torch.randperm(128, device="cuda")[:64]
    store_kv(k, k, cache, cache.clone(), slots)
    got = cache.view(-1, 8, 128)[slots].float()
    assert torch.equal(got, to_cache_dtype(k, cache).float())
