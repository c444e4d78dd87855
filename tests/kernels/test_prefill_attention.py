import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.kernels.prefill_attention import prefill_attention, prefill_attention_ref
from tests.kernels.conftest import TOLERANCE, make_paged, rel_error


@st.composite
def batches(draw):
    """Each sequence brings q_len new tokens after `cached` ones (a cached prefix or the earlier
    chunks of a chunked prefill); q_len 1 is a decode row riding in the same batch."""
    n = draw(st.integers(1, 3))
    q_lens = draw(st.lists(st.integers(1, 70), min_size=n, max_size=n))
    cached = draw(st.lists(st.sampled_from([0, 0, 5, 16, 33]), min_size=n, max_size=n))
    return q_lens, [q + c for q, c in zip(q_lens, cached, strict=True)]


@settings(max_examples=10, deadline=None)
@given(batch=batches(), group=st.sampled_from([1, 2]), block_size=st.sampled_from([16, 32]))
def test_prefill_attention_matches_the_reference(batch, group, block_size):
    q_lens, ctx_lens = batch
    p = make_paged(q_lens, ctx_lens, heads=2 * group, kv_heads=2, block_size=block_size)
    out = prefill_attention(*p.prefill_args())
    assert rel_error(out, prefill_attention_ref(*p.prefill_args())) < TOLERANCE[torch.float32]


def test_tiles_of_any_shape_agree():
    p = make_paged([50, 1, 23], [50, 80, 60])
    ref = prefill_attention_ref(*p.prefill_args())
    for bm, bn in ((16, 16), (32, 16), (16, 64)):
        out = prefill_attention(*p.prefill_args(), block_m=bm, block_n=bn)
        assert rel_error(out, ref) < TOLERANCE[torch.float32], (bm, bn)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prefill_attention_on_cuda(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 6, (1,), generator=g))
    q_lens = torch.randint(1, 700, (n,), generator=g).tolist()
    cached = torch.randint(0, 300, (n,), generator=g).tolist()
    ctx = [q + c for q, c in zip(q_lens, cached, strict=True)]
    p = make_paged(q_lens, ctx, heads=16, kv_heads=8, head_dim=128, dtype=dtype,
                   device="cuda", seed=seed)  # fmt: skip
    out = prefill_attention(*p.prefill_args())
    assert rel_error(out, prefill_attention_ref(*p.prefill_args())) < TOLERANCE[dtype]


@pytest.mark.gpu
def test_metadata_views_at_any_offset_share_one_compiled_kernel():
    """The engine passes block tables, context lengths and query starts as views into one packed
    buffer; a view that starts at an offset not 16-byte aligned must not compile the kernel
    again (a 1.1 s step mid-serving, on the H100)."""
    from minirt.kernels.prefill_attention import _prefill_kernel

    p = make_paged([67, 1, 1], [67, 500, 900], heads=16, kv_heads=8, head_dim=128,
                   dtype=torch.bfloat16, device="cuda")  # fmt: skip
    ref = prefill_attention_ref(*p.prefill_args())
    prefill_attention(*p.prefill_args())
    compiled = sum(len(c[0]) for c in _prefill_kernel.device_caches.values())
    for offset in (1, 2, 3):  # the same values, copied to views that start `offset` ints in
        views = [torch.cat([t.new_zeros(offset), t.flatten()])[offset:].view(t.shape)
                 for t in (p.block_tables, p.context_lens, p.query_start_loc)]  # fmt: skip
        args = list(p.prefill_args())
        args[3:6] = views
        assert rel_error(prefill_attention(*args), ref) < TOLERANCE[torch.bfloat16]
    assert sum(len(c[0]) for c in _prefill_kernel.device_caches.values()) == compiled
