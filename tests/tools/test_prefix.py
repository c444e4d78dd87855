"""The offline optimum equals the best order found by brute force over every order."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.tools.prefix import block_hit_rate, optimal_hit_rate, optimal_hit_tokens


def _best_by_brute_force(prompts, block_size):
    """Try every order; an infinite cache of block-aligned prefixes; the last token never hits."""
    best = 0
    for order in itertools.permutations(prompts):
        cached, hits = set(), 0
        for p in order:
            usable = (len(p) - 1) // block_size * block_size
            k = max(
                (k for k in range(0, usable + 1, block_size) if tuple(p[:k]) in cached), default=0
            )
            hits += k
            cached |= {tuple(p[:k]) for k in range(0, len(p) + 1, block_size)}
        best = max(best, hits)
    return best


@settings(max_examples=60, deadline=None)
@given(
    prompts=st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=7), min_size=1, max_size=4),
    block_size=st.sampled_from([1, 2, 3]),
)
def test_the_optimum_is_the_best_order_of_an_infinite_cache(prompts, block_size):
    assert optimal_hit_tokens(prompts, block_size) == _best_by_brute_force(prompts, block_size)


def test_whole_blocks_hit_less_than_tokens_when_prefixes_end_inside_a_block():
    shared = list(range(10))
    prompts = [shared + [100 + i, 200 + i] for i in range(4)]  # 10 shared tokens, blocks of 4
    assert optimal_hit_rate(prompts) == 3 * 10 / 48
    assert block_hit_rate(prompts, 4) == 3 * 8 / 48
