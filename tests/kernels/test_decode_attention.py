import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.kernels.decode_attention import (
    decode_attention,
    decode_attention_ref,
    default_tiles,
    split_counters,
    split_plan,
)
from tests.kernels.conftest import TOLERANCE, make_paged, rel_error


@settings(max_examples=12, deadline=None)
@given(
    ctx_lens=st.lists(st.integers(1, 70), min_size=1, max_size=4),
    group=st.sampled_from([1, 2, 4]),
    block_size=st.sampled_from([16, 32]),
    num_splits=st.sampled_from([None, 1, 3]),
)
def test_decode_attention_matches_the_reference(ctx_lens, group, block_size, num_splits):
    p = make_paged([1] * len(ctx_lens), ctx_lens, heads=2 * group, kv_heads=2,
                   block_size=block_size)  # fmt: skip
    ref = decode_attention_ref(*p.decode_args())
    out = decode_attention(*p.decode_args(), num_splits=num_splits)
    assert rel_error(out, ref) < TOLERANCE[torch.float32]


def test_split_k_gives_the_same_answer_however_the_context_is_cut():
    p = make_paged([1, 1], [90, 33], heads=4, kv_heads=1)
    outs = [decode_attention(*p.decode_args(), num_splits=n) for n in (1, 2, 4, 6)]
    # and however it is tiled: few splits read 128-token tiles by default, many 32
    outs += [
        decode_attention(*p.decode_args(), num_splits=n, block_n=b) for n, b in ((1, 32), (6, 128))
    ]
    for out in outs[1:]:
        assert rel_error(out, outs[0]) < 1e-6


def test_a_bound_above_the_context_changes_nothing_and_padding_rows_give_zeros():
    # What a CUDA graph does: max_model_len as the bound, padding rows with context length 0.
    p = make_paged([1, 1, 1], [40, 17, 1], heads=4, kv_heads=2)
    exact = decode_attention(*p.decode_args())
    p.context_lens[2] = 0
    bounded = decode_attention(*p.decode_args(bound=4096))
    torch.testing.assert_close(bounded[:2], exact[:2])
    assert torch.equal(bounded[2], torch.zeros_like(bounded[2]))
    assert torch.equal(decode_attention_ref(*p.decode_args(bound=4096))[2], bounded[2])
    one = decode_attention(*p.decode_args(bound=4096), num_splits=1)  # written without a merge
    torch.testing.assert_close(one[:2], exact[:2])
    assert torch.equal(one[2], torch.zeros_like(one[2]))


def test_split_plan_fills_the_gpu_from_the_batch_alone():
    assert split_plan(8) == 64  # batch 1, 8 KV heads: cut finest (capped)
    assert split_plan(64 * 8) == 2
    assert split_plan(128 * 8) == 1  # one program per (sequence, KV head): nothing to merge
    assert split_plan(4096 * 8) == 1
    assert split_plan(8, num_splits=3) == 3
    assert default_tiles(1)[0] == 128 and default_tiles(64)[0] == 32  # long partitions, big tiles


def test_the_last_split_to_finish_merges_and_leaves_the_counters_at_zero():
    """Splits count themselves done on a shared counter; the last merges and zeroes it, so the
    next launch (a graph's replay, the next layer) starts from zero: the same answer each time."""
    p = make_paged([1, 1, 1], [70, 3, 129], heads=4, kv_heads=2, block_size=16)
    ref = decode_attention_ref(*p.decode_args())
    counters = split_counters(p.q.device, 6)
    for splits in (None, 5, 5):
        out = decode_attention(*p.decode_args(), num_splits=splits)
        assert rel_error(out, ref) < TOLERANCE[torch.float32]
        assert not counters.any()
    counters[1] = 1  # sequence 0, KV head 1 counted one split too many: merged too early
    bad = decode_attention(*p.decode_args(), num_splits=5)
    counters.zero_()
    assert not torch.allclose(bad[0, 2:], ref[0, 2:], atol=1e-3, rtol=1e-3)  # its two heads
    assert rel_error(bad[0, :2], ref[0, :2]) < 1e-5 and rel_error(bad[1:], ref[1:]) < 1e-5


@pytest.mark.parametrize("splits", [1, 4, 64])
def test_each_sequence_cuts_its_own_context_a_short_one_into_fewer_parts(splits):
    """A 1-token and a 5,000-token context in one batch, with a bound far above both (a graph's
    max_model_len): the same answer whatever the split count."""
    p = make_paged([1, 1], [1, 5000], heads=2, kv_heads=1, block_size=32)
    ref = decode_attention_ref(*p.decode_args())
    out = decode_attention(*p.decode_args(bound=40960), num_splits=splits)
    assert rel_error(out, ref) < TOLERANCE[torch.float32]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_splits", [None, 1])  # 1: the output written without a merge
def test_decode_attention_on_cuda(dtype, seed, num_splits):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(1, 3000, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g)
    p = make_paged([1] * len(ctx), ctx.tolist(), heads=16, kv_heads=8, head_dim=128,
                   block_size=16, dtype=dtype, device="cuda", seed=seed)  # fmt: skip
    ref = decode_attention_ref(*p.decode_args())
    out = decode_attention(*p.decode_args(), num_splits=num_splits)
    assert rel_error(out, ref) < TOLERANCE[dtype]


@pytest.mark.gpu
def test_decode_attention_replays_from_a_cuda_graph_for_new_contexts():
    p = make_paged([1] * 8, [300] * 8, heads=16, kv_heads=8, head_dim=128,
                   dtype=torch.bfloat16, device="cuda")  # fmt: skip
    args = p.decode_args(bound=2048)
    decode_attention(*args)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = decode_attention(*args)
    for lens in ([300, 1, 0, 299, 150, 2, 77, 256], [5] * 8):
        p.context_lens.copy_(torch.tensor(lens, dtype=torch.int32))
        graph.replay()
        assert rel_error(out, decode_attention_ref(*args)) < TOLERANCE[torch.bfloat16]


@pytest.mark.gpu
def test_metadata_views_at_any_offset_share_one_compiled_kernel():
    """Block tables and context lengths handed over as views at odd offsets: no new compile."""
    from minirt.kernels.decode_attention import _decode_split_kernel

    p = make_paged([1, 1, 1], [300, 900, 2000], heads=16, kv_heads=8, head_dim=128,
                   dtype=torch.bfloat16, device="cuda")  # fmt: skip
    ref = decode_attention_ref(*p.decode_args())
    decode_attention(*p.decode_args())
    kernels = (_decode_split_kernel,)
    compiled = [sum(len(c[0]) for c in k.device_caches.values()) for k in kernels]
    for offset in (1, 2, 3):
        views = [torch.cat([t.new_zeros(offset), t.flatten()])[offset:].view(t.shape)
                 for t in (p.block_tables, p.context_lens)]  # fmt: skip
        args = list(p.decode_args())
        args[3:5] = views
        assert rel_error(decode_attention(*args), ref) < TOLERANCE[torch.bfloat16]
    assert [sum(len(c[0]) for c in k.device_caches.values()) for k in kernels] == compiled


def _new_tokens(ctx_lens, heads=4, kv_heads=2, head_dim=16, block_size=16, dtype=torch.float32,
                device="cpu", cache_dtype=None, seed=0):  # fmt: skip
    """A decode step's raw q, k, v (views of one packed projection) for sequences whose context
    ends at the new token (0: a padding row), and `decode_attention_qkv`'s arguments. The new
    tokens' slots hold NaN: a kernel that reads one before storing it fails."""
    from minirt.model.layers import RotaryEmbedding

    p = make_paged([1] * len(ctx_lens), ctx_lens, heads, kv_heads, head_dim, block_size,
                   seed=seed)  # fmt: skip
    g = torch.Generator().manual_seed(seed + 1)
    slots = torch.full((len(ctx_lens),), -1, dtype=torch.int64)
    for s, c in enumerate(ctx_lens):
        if c:
            slots[s] = (
                int(p.block_tables[s, (c - 1) // block_size]) * block_size + (c - 1) % block_size
            )
    for cache in (p.k_cache, p.v_cache):
        cache.view(-1, kv_heads, head_dim)[slots[slots >= 0]] = float("nan")
    n, qs, kvs = len(ctx_lens), heads * head_dim, kv_heads * head_dim
    qkv = (torch.randn(n, qs + 2 * kvs, generator=g) * 3).to(device, dtype)
    q, k, v = (x.view(n, -1, head_dim) for x in qkv.split([qs, kvs, kvs], dim=-1))
    weights = [(1 + 0.1 * torch.randn(head_dim, generator=g)).to(device, dtype) for _ in "qk"]
    table = RotaryEmbedding(head_dim, 4096, 10000.0).to(device)
    positions = torch.tensor([max(c - 1, 0) for c in ctx_lens]).to(device)
    caches = [c.to(device, cache_dtype or dtype) for c in (p.k_cache, p.v_cache)]
    return [positions, q, k, v, *weights, 1e-6, table.cos, table.sin, *caches, slots.to(device),
            p.block_tables.to(device), p.context_lens.to(device), p.scale, 4096]  # fmt: skip


def _cloned(args):
    return [a.clone() if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("target_programs", [1, 1024])  # one split; many
def test_decode_attention_qkv_is_norm_rope_store_then_attention(monkeypatch, target_programs):
    """The fused decode kernel against its reference and against the two kernels it replaces:
    the same output, the same pool (bit for bit with the kernels), padding rows storing nothing."""
    from minirt.kernels import decode_attention as da
    from minirt.kernels.qk_norm_rope import qk_norm_rope_store

    monkeypatch.setattr(da, "TARGET_PROGRAMS", target_programs)
    args = _new_tokens([70, 0, 3, 129, 16], heads=6, kv_heads=2)
    ref_args, parts_args = _cloned(args), _cloned(args)
    out = da.decode_attention_qkv(*args)
    ref = da.decode_attention_qkv_ref(*ref_args)
    assert rel_error(out, ref) < TOLERANCE[torch.float32]
    assert torch.equal(out[1], torch.zeros_like(out[1]))  # the padding row
    q = qk_norm_rope_store(*parts_args[:12])
    parts = da.decode_attention(q, *parts_args[9:11], *parts_args[12:])
    assert rel_error(out, parts) < 1e-6
    exact = dict(rtol=0, atol=0, equal_nan=True)
    for pool, mine, theirs in zip(args[9:11], parts_args[9:11], ref_args[9:11], strict=True):
        torch.testing.assert_close(pool, mine, **exact)  # the kernels' arithmetic
        torch.testing.assert_close(pool, theirs, equal_nan=True)
        assert pool.isnan().sum() == theirs.isnan().sum()  # 4 new slots filled, no other


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.float8_e4m3fn])
@pytest.mark.parametrize("seed", [0, 1])
def test_decode_attention_qkv_on_cuda(cache_dtype, seed):
    from minirt.kernels.decode_attention import decode_attention_qkv, decode_attention_qkv_ref

    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(1, 3000, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g)
    ctx[0] = 0  # a padding row
    args = _new_tokens(ctx.tolist(), 16, 8, 128, 16, torch.bfloat16, "cuda", cache_dtype, seed)
    ref_args = _cloned(args)
    out = decode_attention_qkv(*args)
    ref = decode_attention_qkv_ref(*ref_args)
    assert rel_error(out, ref) < TOLERANCE[torch.bfloat16] * (
        4 if cache_dtype != torch.bfloat16 else 1
    )
    for pool, theirs in zip(args[9:11], ref_args[9:11], strict=True):
        torch.testing.assert_close(pool.float(), theirs.float(), rtol=7e-2, atol=2e-2,
                                   equal_nan=True)  # fmt: skip


def test_a_learners_decode_attention_or_store_turns_the_fused_decode_kernel_off():
    from dataclasses import replace

    from minirt.kernels.backend import TRITON, get_backend
    from minirt.kernels.store_kv import store_kv_ref

    assert get_backend(TRITON, "cpu").decode_attention_qkv is TRITON.decode_attention_qkv
    for role, mine in (("decode_attention", decode_attention_ref), ("store_kv", store_kv_ref)):
        assert get_backend(replace(TRITON, **{role: mine}), "cpu").decode_attention_qkv is None
