"""Two prefix-cache bugs found by random load, each pinned by its reproduction.

1. Hash cache + chunked prefill: a chunk that ends mid-block, then fills the block in the next
   step, publishes it when scheduled; a request admitted in that same step hits it. The writer
   must fill the shared block itself (no copy-on-write), or the reader sees stale KV.
2. Radix cache: a match that ends inside a long cached node pins only the matched blocks, so an
   allocation that fits once the node's tail is evicted is admitted.
"""

import json
import os

from minirt import LLM, SamplingParams
from minirt.kv.radix_cache import RadixCache

GREEDY = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
ONE = SamplingParams(temperature=0, max_tokens=1)


def _text() -> str:
    return open(os.path.join(os.path.dirname(json.__file__), "decoder.py")).read()


def test_a_request_admitted_beside_the_chunk_that_fills_its_cached_block_reads_that_chunk():
    text = _text()
    x, y, z = "def f(x):", text[:150], text[:170]  # z extends y; x shifts y's chunk boundaries
    kw = dict(device="cpu", max_num_batched_tokens=64, block_size=16, kv_cache_bytes=24 * 16 * 8192)
    alone = LLM(**kw).generate([z], GREEDY, use_tqdm=False)[0].token_ids
    llm = LLM(**kw)
    # Dirty every block with another prompt's KV, then forget it: a stale read changes tokens.
    llm.generate(["#" * 380], ONE, use_tqdm=False)
    llm.block_manager.evict()
    outs = llm.generate([x, y, z], GREEDY, use_tqdm=False)
    assert outs[2].num_cached_tokens > 0, "z was meant to hit y's blocks"
    assert outs[2].token_ids == alone
    assert llm.block_manager.num_free_blocks == llm.num_blocks
    llm.block_manager.check_invariants()


def test_the_scheduler_never_copies_a_block_it_has_just_published():
    """The same run at the scheduler's level: no step copies a block away from its writer."""
    text = _text()
    kw = dict(device="cpu", max_num_batched_tokens=64, block_size=16, kv_cache_bytes=24 * 16 * 8192)
    llm = LLM(**kw)
    batches, schedule = [], llm.scheduler.schedule
    llm.scheduler.schedule = lambda: batches.append(schedule()) or batches[-1]
    llm.generate(["def f(x):", text[:150], text[:170]], GREEDY, use_tqdm=False)
    assert sum(b.prefix_hit_tokens for b in batches) > 0
    assert all(not b.kv_copies for b in batches)


def test_radix_cache_admits_a_prompt_whose_match_ends_inside_a_long_cached_node():
    llm = LLM(device="cpu", prefix_cache="radix", kv_cache_bytes=30 * 16 * 8192)  # 30 blocks
    llm.generate(["a" * 300], ONE, use_tqdm=False)  # one node of ~300 tokens, 19 blocks
    out = llm.generate(["a" + "b" * 266], ONE, use_tqdm=False)[0]  # matches 1 token of it
    assert out.num_cached_tokens == 1 and len(out.token_ids) == 1
    assert llm.block_manager.num_free_blocks == llm.num_blocks
    llm.block_manager.check_invariants()


def test_radix_fit_counts_only_the_blocks_the_match_pins():
    rc = RadixCache(num_blocks=6, block_size=2)
    rc.allocate(1, [1] * 10, 10)  # 5 blocks
    rc.cache_computed(1, [1] * 10, 10)
    rc.free(1)  # one unlocked node over 5 blocks: 1 free + 5 evictable
    prompt = [1, 1, 1, 2, 2, 2, 2, 2, 2, 2]  # matches 3 tokens: block 0 and half of block 1
    # 5 blocks: block 0 shared, a copy of block 1's half, 3 more; blocks 0 and 1 stay pinned
    # (the copy's source), the node's other 3 blocks are evicted: 1 free + 3 = 4 new blocks.
    assert rc.can_allocate(prompt, 10)
    assert not rc.can_allocate(prompt, 12)  # one more block would need block 1 itself
    assert rc.allocate(2, prompt, 10) == 3
    rc.check_invariants()
    assert not rc.can_allocate([3] * 4, 4)  # and now the pool is really full
