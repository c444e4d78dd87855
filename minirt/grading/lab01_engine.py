"""Lab 1, task 4: the learner's block books run the engine, `LLM(prefix_cache=HashBlocks)`.

Each case runs the engine twice on the same fresh few-shot workload (two rounds of prompts that
share a system prompt, so the second round hits blocks the first one freed) in a pool small enough
to preempt and to reuse cached blocks: once on the learner's `HashBlocks`, once on minirt's
`"hash"` cache (`BlockManager`). The notebook fixes every choice the books make (which free block
is reused first, which blocks a freed sequence puts back first), so the two runs must agree
exactly: every step's admissions, block tables and free blocks, each request's cached tokens and
greedy tokens; and at the end no block is held or leaked.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

from minirt.grading.core import Mismatch, Refused

BYTES_PER_TOKEN = 8192  # the embedded target's KV per token (float32)
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


def run(cache, rounds, block_size: int, num_blocks: int, max_tokens: int):
    """The engine on `cache` (a class, or a registry name): (the LLM, [(outputs, step events)]
    per round)."""
    from minirt import LLM, SamplingParams  # the engine, only for this task

    llm = LLM(
        device="cpu",
        block_size=block_size,
        kv_cache_bytes=num_blocks * block_size * BYTES_PER_TOKEN,
        max_num_batched_tokens=32,
        prefix_cache=cache,
        schedule_policy="fcfs",
        trace=True,
    )
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    runs = []
    for prompts in rounds:
        outs = llm.generate(prompts, params, use_tqdm=False)
        runs.append((outs, [e for e in llm.recorder.events if e["type"] == "step"]))
    return llm, runs


def check_engine(learner: SimpleNamespace, rng: random.Random, i: int, forbidden) -> None:
    from minirt.grading.guard import check_instance

    bs = (2, 4)[i % 2]
    rounds = workload(rng, bs)
    max_tokens = rng.randint(2, 4)
    longest = max(len(p) for prompts in rounds for p in prompts) + max_tokens
    num_blocks = -(-longest // bs) + rng.randint(0, 3)  # tight: preemption, cached blocks reused
    mine_llm, mine = run(learner.HashBlocks, rounds, bs, num_blocks, max_tokens)
    refusals = check_instance("your HashBlocks", mine_llm.block_manager, forbidden)
    if refusals:
        raise Refused("; ".join(map(str, refusals[:3])))
    ref_llm, want = run("hash", rounds, bs, num_blocks, max_tokens)
    size = sum(len(p) for prompts in rounds for p in prompts)
    case = (
        f"two rounds of {len(rounds[0])} and {len(rounds[1])} few-shot prompts ({size} tokens), "
        f"block_size {bs}, {num_blocks} blocks, max_tokens {max_tokens}"
    )
    for r, ((m_out, m_steps), (w_out, w_steps)) in enumerate(zip(mine, want, strict=True)):
        at = f"{case}: round {r + 1}"
        for ms, ws in zip(m_steps, w_steps, strict=False):
            _compare_step(at, ms, ws, size)
        if len(m_steps) != len(w_steps):
            raise Mismatch(
                f"{at}: your run took {len(m_steps)} steps; minirt's {len(w_steps)}", size
            )
        for k, (a, b) in enumerate(zip(m_out, w_out, strict=True)):
            _compare_output(f"{at}, request {k + 1}", a, b, size)
    _check_nothing_held(case, mine_llm.block_manager, size)


def _compare_step(at: str, mine: dict, want: dict, size: int) -> None:
    step = f"{at}, step {mine['step']}"
    adm = [(s["seq_id"], s["num_new_tokens"]) for s in mine["scheduled"]]
    ref = [(s["seq_id"], s["num_new_tokens"]) for s in want["scheduled"]]
    if adm != ref:
        why = "admissions follow can_allocate, and a hit computes fewer tokens"
        if any(n == 0 for _, n in adm):
            why = "a request left with nothing to compute: the last prompt token was matched"
        raise Mismatch(
            f"{step}: the engine scheduled (sequence, new tokens) {adm} on your books; on "
            f"minirt's {ref} ({why})",
            size,
        )
    for seq, table in want["block_tables"].items():
        got = mine["block_tables"].get(seq)
        if got != table:
            raise Mismatch(f"{step}: sequence {seq}'s block table is {got}; minirt's {table}", size)
    for key, what in (("num_free_blocks", "free"), ("num_cached_blocks", "cached")):
        if mine[key] != want[key]:
            raise Mismatch(f"{step}: {mine[key]} blocks {what}; minirt has {want[key]}", size)


def _compare_output(at: str, a, b, size: int) -> None:
    if a.num_cached_tokens != b.num_cached_tokens:
        raise Mismatch(
            f"{at}: {a.num_cached_tokens} prompt tokens came from your cache; minirt's had "
            f"{b.num_cached_tokens}",
            size,
        )
    if a.token_ids != b.token_ids:
        pairs = zip(a.token_ids, b.token_ids, strict=False)
        j = next((j for j, (x, y) in enumerate(pairs) if x != y), len(b.token_ids))
        raise Mismatch(
            f"{at}: generated token {j + 1} is {a.token_ids[j]}, minirt's {b.token_ids[j]} "
            "(a block hit held other tokens' KV?)",
            size,
        )


def _check_nothing_held(case: str, books, size: int) -> None:
    if books.tables:
        raise Mismatch(f"{case}: after the run sequences {sorted(books.tables)} still hold blocks")
    held = [b for b, n in enumerate(books.ref_count) if n]
    if held:
        raise Mismatch(f"{case}: after the run blocks {held} still have holders", size)
    free = books.num_free_blocks
    if free != books.num_blocks:
        raise Mismatch(
            f"{case}: after the run {books.num_blocks - free} of {books.num_blocks} blocks are "
            "not free (leaked: a block freed with no holder must go back to the free list)",
            size,
        )
    try:
        books.check_invariants()
    except AssertionError as e:
        raise Mismatch(f"{case}: after the run, check_invariants says: {e}", size) from None
