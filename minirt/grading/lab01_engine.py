"""Lab 1, task 4: the learner's block books run the engine, `LLM(prefix_cache=HashBlocks)`.

Each case runs the engine twice on the same fresh few-shot workload (two rounds of prompts that
share a system prompt, so the second round hits blocks the first one freed) in a pool small enough
to preempt and to reuse cached blocks: once on the learner's `HashBlocks`, once on minirt's
`"hash"` cache (`BlockManager`). The notebook fixes every choice the books make (which free block
is reused first, which blocks a freed sequence puts back first), so the two runs must agree
exactly: every step's admissions, block tables and free blocks, each request's cached tokens and
greedy tokens; and at the end no block is held or leaked. The grader's worker runs the
learner's side only (`run` on `HashBlocks`) and sends the record; the parent runs minirt's side and
compares (`compare`).
"""

from __future__ import annotations

import random

from minirt.grading.engine_runs import (
    books_after,
    check_books_after,
    compare_rounds,
    engine_on,
    rounds_record,
)

VOCAB = 256  # the embedded model's byte-level vocabulary


def workload(rng: random.Random, block_size: int) -> list[list[list[int]]]:
    """Two rounds of prompts, each a shared prefix (one of 1-3 system prompts with examples)
    and a question of its own; the second round ends with the first prompt cut to whole blocks
    (a prompt whose every block may be cached: its last token must still be computed)."""
    prefixes = [[rng.randrange(VOCAB) for _ in range(rng.randint(6, 16))] for _ in range(3)]
    prefixes = prefixes[: rng.randint(1, 3)]

    def ask() -> list[int]:
        return rng.choice(prefixes) + [rng.randrange(VOCAB) for _ in range(rng.randint(1, 6))]

    rounds = [[ask() for _ in range(rng.randint(3, 6))] for _ in range(2)]
    first = rounds[0][0]
    rounds[1].append(first[: len(first) // block_size * block_size])
    return rounds


def draw(rng: random.Random, i: int) -> dict:
    """Case `i`: the rounds of prompts and an engine setting where the pool is tight."""
    bs = (2, 4)[i % 2]
    rounds = workload(rng, bs)
    max_tokens = rng.randint(2, 4)
    longest = max(len(p) for prompts in rounds for p in prompts) + max_tokens
    num_blocks = -(-longest // bs) + rng.randint(0, 3)  # tight: preemption, cached blocks reused
    return {"rounds": rounds, "block_size": bs, "num_blocks": num_blocks, "max_tokens": max_tokens}


def run(cache, case: dict, forbidden=None) -> dict:
    """The engine on `cache` (a class, or a registry name) through the case's rounds: every
    step's decisions and every request's tokens, then what the books still hold at the end."""
    from minirt import SamplingParams

    llm = engine_on(cache, case, forbidden, "your HashBlocks")
    params = SamplingParams(temperature=0, max_tokens=case["max_tokens"], ignore_eos=True)
    rounds = rounds_record(llm, case["rounds"], params)
    return {"rounds": rounds, "end": books_after(llm.block_manager)}


def compare(got: dict, want: dict, case: dict) -> None:
    rounds = case["rounds"]
    size = sum(len(p) for prompts in rounds for p in prompts)
    about = (
        f"two rounds of {len(rounds[0])} and {len(rounds[1])} few-shot prompts ({size} tokens), "
        f"block_size {case['block_size']}, {case['num_blocks']} blocks, "
        f"max_tokens {case['max_tokens']}"
    )
    compare_rounds(got["rounds"], want["rounds"], about, size, HINTS)
    check_books_after(got["end"], about, size, LEAK)


def _scheduled_hint(step: dict) -> str:
    if any(n == 0 for _, n in step["scheduled"]):
        return "a request left with nothing to compute: the last prompt token was matched"
    return "admissions follow can_allocate, and a hit computes fewer tokens"


LEAK = "a block freed with no holder must go back to the free list"
HINTS = {
    "scheduled": _scheduled_hint,
    "cached": "the tokens your prefix match found",
    "tokens": "a block hit held other tokens' KV?",
}
