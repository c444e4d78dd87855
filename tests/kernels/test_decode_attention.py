import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.kernels.decode_attention import (
    decode_attention,
    decode_attention_ref,
    default_tiles,
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
    assert split_plan(128 * 8) == 1  # one program per (sequence, KV head): no merge kernel
    assert split_plan(4096 * 8) == 1
    assert split_plan(8, num_splits=3) == 3
    assert default_tiles(1)[0] == 128 and default_tiles(64)[0] == 32  # long partitions, big tiles


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
    from minirt.kernels.decode_attention import _decode_combine_kernel, _decode_split_kernel

    p = make_paged([1, 1, 1], [300, 900, 2000], heads=16, kv_heads=8, head_dim=128,
                   dtype=torch.bfloat16, device="cuda")  # fmt: skip
    ref = decode_attention_ref(*p.decode_args())
    decode_attention(*p.decode_args())
    kernels = (_decode_split_kernel, _decode_combine_kernel)
    compiled = [sum(len(c[0]) for c in k.device_caches.values()) for k in kernels]
    for offset in (1, 2, 3):
        views = [torch.cat([t.new_zeros(offset), t.flatten()])[offset:].view(t.shape)
                 for t in (p.block_tables, p.context_lens)]  # fmt: skip
        args = list(p.decode_args())
        args[3:5] = views
        assert rel_error(decode_attention(*args), ref) < TOLERANCE[torch.bfloat16]
    assert [sum(len(c[0]) for c in k.device_caches.values()) for k in kernels] == compiled
