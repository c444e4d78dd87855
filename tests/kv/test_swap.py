"""KV swap: blocks come back bitwise, host blocks are never lost, compute waits for the copy."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.kv.swap import SwapSpace


def _pool(num_blocks=8, device="cpu", dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, num_blocks, 4, 2, 8, generator=g).to(device, dtype)


def test_swapped_out_blocks_come_back_bitwise_into_other_blocks():
    pool = _pool()
    want = pool[:, :, [1, 5, 6]].clone()
    swap = SwapSpace(pool, num_host_blocks=4)
    host, _ = swap.swap_out([1, 5, 6])
    pool[:, :, [1, 5, 6]] = float("nan")  # the blocks are reused by someone else meanwhile
    swap.wait(swap.swap_in(host, [0, 2, 7]))
    assert torch.equal(pool[:, :, [0, 2, 7]], want)
    assert swap.num_free_blocks == 4


def test_a_full_swap_space_says_what_to_do():
    swap = SwapSpace(_pool(), num_host_blocks=2)
    with pytest.raises(RuntimeError, match="preemption_mode='recompute'"):
        swap.swap_out([0, 1, 2])
    assert swap.num_free_blocks == 2  # nothing taken by the failed call


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=20))
def test_any_sequence_of_swaps_keeps_every_sequence_bitwise_and_leaks_no_host_block(ops):
    pool = _pool()
    swap = SwapSpace(pool, num_host_blocks=6)
    saved = {}  # what each swapped-out group held, keyed by its host blocks
    for out, block in ops:
        if out and swap.num_free_blocks:
            host, _ = swap.swap_out([block])
            saved[tuple(host)] = pool[:, :, block].clone()
            pool[:, :, block] = 0
        elif saved:
            host, want = saved.popitem()
            swap.swap_in(list(host), [block])
            assert torch.equal(pool[:, :, block], want)
    assert swap.num_free_blocks + sum(len(h) for h in saved) == 6


@pytest.mark.gpu
def test_on_cuda_compute_that_waits_on_the_event_sees_the_swapped_in_kv():
    pool = _pool(num_blocks=64, device="cuda")
    swap = SwapSpace(pool, num_host_blocks=8)
    assert swap.host.is_pinned()
    idx = torch.tensor([3, 9], device="cuda")  # made up front: no host copies in the window
    want = pool.index_select(2, idx)
    host, out_done = swap.swap_out([3, 9])
    out_done.synchronize()
    pool.index_fill_(2, idx, 0)
    with torch.cuda.stream(swap.stream):
        torch.cuda._sleep(200_000_000)  # a deliberately slow copy: ~0.1 s of spinning first
    event = swap.swap_in(host, [3, 9])
    early = pool.index_select(2, idx)  # compute that forgot to wait: still the zeros
    swap.wait(event)  # the compute stream waits on the GPU; the CPU does not
    late = pool.index_select(2, idx)  # ordered after the slow copy
    torch.cuda.synchronize()
    assert torch.equal(late, want)
    assert torch.equal(early, torch.zeros_like(early))  # the race the event prevents


def test_host_blocks_are_copied_in_runs_of_consecutive_blocks():
    from minirt.kv.swap import _runs

    assert _runs([4, 5, 6, 9, 10, 2]) == [(0, 4, 3), (3, 9, 2), (5, 2, 1)]
    assert _runs([]) == []
