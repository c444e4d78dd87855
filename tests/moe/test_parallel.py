"""Expert parallelism on 2 and 4 CPU processes (gloo): dispatch -> experts -> combine gives what
one process gives, with one or two micro-batches; FP8 dispatch stays within E4M3's error.

Each world size is one spawn (process start-up dominates), checked against `MoEBlock` run here.
"""

from fractions import Fraction

import pytest
import torch

from minirt.moe.demo import Recipe, build, ep_worker, token_slice
from minirt.moe.launch import run_ranks
from minirt.moe.parallel import (
    Exchange,
    ExpertParallelMoE,
    all_to_all_combine,
    all_to_all_dispatch,
    dispatch_plan,
    fp8_pack,
    fp8_unpack,
)

RECIPE = Recipe(hidden=64, intermediate=32, num_experts=8, top_k=2, num_tokens=23,
                shared_intermediate=16)  # fmt: skip
# a router skewed so hard that the last ranks' experts receive no rows at all
SKEWED = Recipe(hidden=128, intermediate=32, num_experts=8, top_k=2, num_tokens=16, skew=40.0)
CASES = [{}, {"micro_batches": 2}, {"fp8_dispatch": True}, {"gemm": "loop", "micro_batches": 3}]


def _cases(rank, world_size):
    runs = [ep_worker(rank, world_size, RECIPE, opts) for opts in CASES]
    return runs + [ep_worker(rank, world_size, SKEWED, {"fp8_dispatch": True, "micro_batches": 2})]


@pytest.mark.parametrize("world_size", [2, 4])
def test_expert_parallel_block_equals_the_single_process_block(world_size):
    block, x = build(RECIPE)
    with torch.no_grad():
        want = block(x)
        load = block.route(x).stats.tokens_per_expert
    per_rank = run_ranks(_cases, world_size)  # [rank][case]
    for c, opts in enumerate(CASES):
        y = torch.cat([per_rank[r][c]["y"] for r in range(world_size)])
        if opts.get("fp8_dispatch"):  # E4M3 keeps 3 mantissa bits: ~3 % per value
            assert (y - want).norm() / want.norm() < 0.05
        else:
            torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
        stats = [per_rank[r][c]["stats"] for r in range(world_size)]
        recv = [sum(s["recv_rows"]) for s in stats]
        per = RECIPE.num_experts // world_size
        assert recv == [sum(load[r * per : (r + 1) * per]) for r in range(world_size)]
        for r, s in enumerate(stats):  # rows r sent to q are the rows q received from r
            assert s["send_rows"] == [stats[q]["recv_rows"][r] for q in range(world_size)]
            assert s["num_tokens"] == len(range(RECIPE.num_tokens)[token_slice(23, r, world_size)])
            phases = {p["phase"] for p in s["phases"]}
            assert phases == {"route", "dispatch", "experts", "combine"}
    block, x = build(SKEWED)
    with torch.no_grad():
        want, load = block(x), block.route(x).stats.tokens_per_expert
    assert load == [16, 16] + [0] * 6  # every rank but rank 0 receives nothing
    y = torch.cat([per_rank[r][len(CASES)]["y"] for r in range(world_size)])
    assert (y - want).norm() / want.norm() < 0.05


def _through_an_exchange(rank, world_size, recipe, shares):
    """This rank's share of the batch through the block on minirt's exchange as three functions,
    and on the block's own (overlapped) path, with 1-3 micro-batches (a rank may own no token)."""
    block, x = build(recipe)
    start = sum(shares[:rank])
    exchange = Exchange(dispatch_plan, all_to_all_dispatch, all_to_all_combine)
    mine = x[start : start + shares[rank]]  # fewer tokens than micro-batches is fine too
    blocks = (ExpertParallelMoE(block, exchange=exchange), ExpertParallelMoE(block))
    return [ep.forward(mine, micro_batches=m)[0] for m in (1, 2, 3) for ep in blocks]


@pytest.mark.parametrize("shares", [[9, 14], [0, 23], [1, 22]])
def test_the_block_on_an_exchange_of_three_functions_equals_one_process(shares):
    block, x = build(RECIPE)
    with torch.no_grad():
        want = block(x)
    per_rank = run_ranks(_through_an_exchange, 2, (RECIPE, shares))
    for ys in zip(*per_rank, strict=True):
        torch.testing.assert_close(torch.cat(ys), want, rtol=1e-5, atol=1e-5)


def test_fp8_pack_roundtrip_keeps_e4m3_precision():
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(0)) * 30
    q, s = fp8_pack(x)
    assert q.dtype == torch.uint8 and s.shape == (5, 2)  # one scale per 128 values
    back = fp8_unpack(q, s, torch.float32)
    assert ((back - x).abs() <= x.abs() * 2**-4 + s.repeat_interleave(128, 1) * 2**-9).all()


def _returns_an_object(rank, world_size):
    return Fraction(rank, world_size)  # any object that is not tensors or plain data


def test_a_rank_returning_an_object_is_refused_not_unpickled():
    """run_ranks reads results with torch.load(weights_only=True): plain data only."""
    import pickle

    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        run_ranks(_returns_an_object, 2)


@pytest.mark.gpu
@pytest.mark.parametrize(("micro_batches", "phase_times"), [(1, True), (2, False)])
def test_over_nccl_the_block_equals_one_process_on_two_gpus(micro_batches, phase_times):
    """The same equality over NCCL, rank r on GPU r, in bf16 with the Triton grouped GEMM (as
    `bench moe` runs it: ~1 % from rounding; a misrouted row would be ~100 %); phases timed
    one by one, or only the total (the path that lets micro-batches overlap)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs for NCCL (a nvidia-h100-x2 machine)")
    block, x = build(RECIPE)
    with torch.no_grad():
        want = block(x)
    opts = {"device": "cuda", "dtype": torch.bfloat16, "gemm": "triton",
            "micro_batches": micro_batches, "phase_times": phase_times}  # fmt: skip
    runs = run_ranks(ep_worker, 2, (RECIPE, opts), backend="nccl")  # spawned: ep_worker imports
    y = torch.cat([runs[r]["y"] for r in range(2)]).float()
    assert (y - want).norm() / want.norm() < 3e-2
