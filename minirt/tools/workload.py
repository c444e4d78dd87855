"""Reproducible request mixes for experiments: prompts of chosen lengths, outputs of chosen lengths.

Prompts are slices of minirt's own source, tokenized by the engine's tokenizer, so lengths are
exact in tokens; `ignore_eos` makes every request generate exactly its `max_tokens`, so the
scheduler's decisions (and a notebook's stored output) depend only on the seed. Notebooks 01-03.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from minirt.sampling_params import SamplingParams

_SOURCE = Path(__file__).resolve().parents[1] / "kv" / "block_manager.py"


@dataclass
class Workload:
    prompts: list[list[int]]  # token ids
    params: list[SamplingParams]

    @property
    def prompt_lens(self) -> list[int]:
        return [len(p) for p in self.prompts]

    @property
    def output_lens(self) -> list[int]:
        return [p.max_tokens for p in self.params]


def source_tokens(tokenizer) -> list[int]:
    """A few thousand tokens of real text (minirt's block manager source) to slice prompts from."""
    return tokenizer.encode(_SOURCE.read_text())


def mixed_requests(
    tokenizer,
    num_requests: int,
    prompt_lens: tuple[int, int],
    output_lens: tuple[int, int],
    seed: int = 0,
) -> Workload:
    """`num_requests` greedy requests, lengths uniform in the inclusive [lo, hi] ranges."""
    g = torch.Generator().manual_seed(seed)
    text = source_tokens(tokenizer)
    if prompt_lens[1] >= len(text):
        raise ValueError(f"prompts up to {prompt_lens[1]} tokens need a longer source text")

    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    prompts, params = [], []
    for _ in range(num_requests):
        n = draw(*prompt_lens)
        start = draw(0, len(text) - n)
        prompts.append(text[start : start + n])
        params.append(
            SamplingParams(temperature=0.0, max_tokens=draw(*output_lens), ignore_eos=True)
        )
    return Workload(prompts, params)
