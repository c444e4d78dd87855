"""Lab 6, task 5: the learner's radix tree runs the engine, `LLM(prefix_cache=MyRadixCache)`.

Each case runs the engine twice on the same fresh workload, multi-turn (each round resends a
conversation with its reply and a new question) or branching (paths of a tree of segments), in a
pool small enough to evict: once on the learner's `MyRadixCache`, once on minirt's `"radix"`
cache. The notebook gives the block books, so the same tree makes exactly the same decisions:
every step's admissions, block tables and free (or evictable) blocks, each request's cached and
greedy tokens, the tokens evicted, and at the end no block held or leaked. The grader's worker
runs the learner's side only (`run` on `MyRadixCache`) and sends the record; the parent runs
minirt's side and compares (`compare`, with engine_runs' step comparison).
"""

from __future__ import annotations

import random

from minirt.grading.core import Mismatch
from minirt.grading.engine_runs import (
    books_after,
    check_books_after,
    compare_rounds,
    engine_on,
    round_record,
)

# What a step decided, compared with engine_runs' step comparison (the cache's free blocks
# include the evictable ones).
STEP_FIELDS = {
    "scheduled": "the engine scheduled (sequence, new tokens)",
    "block_tables": "block tables",
    "num_free_blocks": "blocks free or evictable",
}
HINTS = {
    "scheduled": "its admissions follow the cache's free and evictable blocks",
    "cached": "the tokens your tree matched",
    "tokens": "a cached block held the wrong KV?",
}


def _workload(rng: random.Random, i: int):
    """Rounds of prompts: multi-turn (each round resends a conversation with its reply and a new
    question) or branching (paths of a tree of segments), small enough for a CPU."""
    vocab = 256
    if i % 2 == 0:
        convs = [
            [rng.randrange(vocab) for _ in range(rng.randint(4, 14))] for _ in range(2 + i // 3)
        ]
        return "multi-turn", convs
    root = [rng.randrange(vocab) for _ in range(rng.randint(6, 16))]
    level, rounds = [root], [[root]]
    for _ in range(2):
        level = [
            p + [rng.randrange(vocab) for _ in range(rng.randint(2, 6))]
            for p in level
            for _ in range(rng.randint(1, 3))
        ]
        rounds.append(list(level))
    return "branching", rounds


def draw(rng: random.Random, i: int) -> dict:
    """Case `i`: a workload, and an engine setting where the pool is tight (the cache evicts)."""
    bs = (2, 4, 8)[i % 3]
    kind, source = _workload(rng, i)
    max_tokens = rng.randint(2, 4)
    prompts0 = source if kind == "multi-turn" else source[-1]
    longest = max(map(len, prompts0)) + (3 + max_tokens) * 3
    num_blocks = -(-longest // bs) + rng.randint(1, 4)  # tight: the cache must evict
    return {
        "kind": kind,
        "source": source,
        "block_size": bs,
        "num_blocks": num_blocks,
        "max_tokens": max_tokens,
        "seed": rng.randrange(2**31),  # the new questions of a multi-turn workload
    }


def run(cache, case: dict, forbidden=None) -> dict:
    """The engine on `cache` (a class, or a registry name) through the case's rounds (a
    multi-turn round resends each conversation with its reply and a new question): every round
    recorded, the tokens it evicted, and the books at the end."""
    from minirt import SamplingParams

    llm = engine_on(cache, case, forbidden)
    params = SamplingParams(temperature=0, max_tokens=case["max_tokens"], ignore_eos=True)
    rng = random.Random(case["seed"])  # the same new questions on both sides
    rounds, multi_turn = [], case["kind"] == "multi-turn"
    prompts = [list(c) for c in case["source"]] if multi_turn else []
    for r in range(3):
        prompts = prompts if multi_turn else case["source"][r]
        outs = llm.generate(prompts, params, use_tqdm=False)
        rounds.append(round_record(llm, outs) | {"prompts": [len(p) for p in prompts]})
        if multi_turn:
            prompts = [
                c + o.token_ids + [rng.randrange(256) for _ in range(3)]
                for c, o in zip(prompts, outs, strict=True)
            ]
    bm = llm.block_manager
    return {"rounds": rounds, "evicted": bm.num_evicted_tokens, "books": books_after(bm)}


def compare(got: dict, want: dict, case: dict) -> None:
    rounds = want["rounds"]
    size = sum(sum(r["prompts"]) for r in rounds)
    about = (
        f"{case['kind']}, {len(rounds)} rounds of {len(rounds[0]['prompts'])}-"
        f"{len(rounds[-1]['prompts'])} prompts ({size} tokens), block_size {case['block_size']}, "
        f"{case['num_blocks']} blocks, max_tokens {case['max_tokens']}"
    )
    compare_rounds(got["rounds"], rounds, about, size, HINTS, STEP_FIELDS)
    if got["evicted"] != want["evicted"]:
        raise Mismatch(
            f"{about}: your cache evicted {got['evicted']} tokens; minirt's {want['evicted']}", size
        )
    check_books_after(got["books"], about, size)
