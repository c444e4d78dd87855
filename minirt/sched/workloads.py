"""Seeded request sets that share prefixes the way real traffic does (and one that shares none).

- `few_shot`: a few long system prompts (with their examples), each request one of them plus its
  own question, arriving interleaved.
- `multi_turn`: conversations; turn t resends the whole history of turns 1..t-1.
- `branching`: tree-of-thought: every path from the root of a tree of segments is a request.
- `no_sharing`: random prompts of the same lengths, the control.
Prompts are token ids drawn from [0, vocab): the benchmark needs shapes, not meaning. Notebook 11.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Workload:
    name: str
    prompts: list[list[int]]
    max_tokens: int  # every request generates this many tokens (ignore_eos)
    params: dict = field(default_factory=dict)  # the generator's arguments, for the JSON

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)

    def to_dict(self) -> dict:
        return {"name": self.name, "num_requests": len(self.prompts),
                "num_prompt_tokens": self.num_prompt_tokens, "max_tokens": self.max_tokens,
                **self.params}  # fmt: skip


def _tokens(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(vocab) for _ in range(n)]


def few_shot(num_requests=32, num_groups=4, system_len=200, question_len=24, max_tokens=16,
             vocab=256, seed=0) -> Workload:  # fmt: skip
    rng = random.Random(seed)
    systems = [_tokens(rng, system_len, vocab) for _ in range(num_groups)]
    prompts = [systems[rng.randrange(num_groups)] + _tokens(rng, question_len, vocab)
               for _ in range(num_requests)]  # fmt: skip
    return Workload("few_shot", prompts, max_tokens, dict(num_groups=num_groups,
                    system_len=system_len, question_len=question_len, seed=seed))  # fmt: skip


def multi_turn(num_conversations=8, turns=4, turn_len=40, max_tokens=16, vocab=256,
               seed=0) -> Workload:  # fmt: skip
    """Each turn adds a user message and the (recorded) assistant reply of the turn before."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(num_conversations):
        history: list[int] = []
        for _ in range(turns):
            history = history + _tokens(rng, turn_len, vocab)
            prompts.append(list(history))
            history = history + _tokens(rng, max_tokens, vocab)  # the reply, as sent back
    rng.shuffle(prompts)  # turns of many users arrive mixed
    return Workload("multi_turn", prompts, max_tokens, dict(num_conversations=num_conversations,
                    turns=turns, turn_len=turn_len, seed=seed))  # fmt: skip


def branching(depth=3, fanout=3, root_len=100, segment_len=30, max_tokens=16, vocab=256,
              seed=0) -> Workload:  # fmt: skip
    """Every node of a `fanout`-ary tree of segments below a root is one request (its path)."""
    rng = random.Random(seed)
    level = [_tokens(rng, root_len, vocab)]
    prompts = list(level)
    for _ in range(depth):
        level = [p + _tokens(rng, segment_len, vocab) for p in level for _ in range(fanout)]
        prompts += level
    rng.shuffle(prompts)
    return Workload("branching", prompts, max_tokens, dict(depth=depth, fanout=fanout,
                    root_len=root_len, segment_len=segment_len, seed=seed))  # fmt: skip


def no_sharing(like: Workload, vocab=256, seed=0) -> Workload:
    """Random prompts with the lengths of `like`'s: the control without shared prefixes."""
    rng = random.Random(seed)
    prompts = [_tokens(rng, len(p), vocab) for p in like.prompts]
    return Workload("no_sharing", prompts, like.max_tokens, dict(like=like.name, seed=seed))


def standard(scale: int = 1, vocab: int = 256, seed: int = 0, length: int = 1) -> list[Workload]:
    """The benchmark's four workloads; `scale` multiplies the number of requests and `length`
    the prompts' parts (CUDA: 8 and 4). Caching a prefix saves its prefill; on a GPU a 224-token
    prompt costs little next to 16 decode steps, so there the prompts are 4x longer (few-shot
    prompts of ~900 tokens, as 5-shot benchmarks have)."""
    shot = few_shot(num_requests=32 * scale, system_len=200 * length,
                    question_len=24 * length, vocab=vocab, seed=seed)  # fmt: skip
    return [
        shot,
        multi_turn(num_conversations=8 * scale, turn_len=40 * length, vocab=vocab, seed=seed),
        branching(
            fanout=3 if scale == 1 else 4,
            root_len=100 * length,
            segment_len=30 * length,
            vocab=vocab,
            seed=seed,
        ),
        no_sharing(shot, vocab=vocab, seed=seed),
    ]
