"""When a sequence stops: an end-of-sequence token, a stop string, max_tokens, the context limit,
or the whole pool. One rule for every loop (plain, overlapped, speculative), applied by
`Scheduler.postprocess` right after the tokens are appended. Notebook 00 (tour).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from minirt.sched.sequence import Sequence


@dataclass
class StopRule:
    max_model_len: int  # a sequence never grows past the context the model was trained for
    pool_tokens: int  # nor past the whole KV pool: alone it could not be preempted any further
    eos_ids: set[int] = field(default_factory=set)
    decode: Callable[[list[int]], str] | None = None  # for stop strings (the tokenizer's)

    def reason(self, token_ids: list[int], num_prompt: int, params) -> str | None:
        """Why a sequence with these tokens stops now ("stop" | "length"), or None."""
        if not params.ignore_eos and token_ids[-1] in self.eos_ids:
            return "stop"
        if params.stop and self.decode is not None:
            text = self.decode(token_ids[num_prompt:])
            if any(s in text for s in params.stop):
                return "stop"
        n = len(token_ids)
        if n - num_prompt >= params.max_tokens or n >= min(self.max_model_len, self.pool_tokens):
            return "length"
        return None

    def keep(self, seq: Sequence, tokens: list[int]) -> list[int]:
        """The new tokens up to and including the first that ends the sequence (an EOS among
        accepted guesses, max_tokens): what the plain engine, one token a step, would emit."""
        params = seq.sampling_params
        for i in range(len(tokens) - 1):
            if self.reason(seq.token_ids + tokens[: i + 1], seq.num_prompt_tokens, params):
                return tokens[: i + 1]
        return tokens
