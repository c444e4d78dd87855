"""A request in flight: its tokens, how many have KV in the pool, and why it stopped.

`num_computed_tokens` is the one number the scheduler moves: prefill chunks and decodes advance
it, preemption by recompute resets it to 0, a prefix-cache hit starts it above 0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from minirt.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    SWAPPED = "swapped"  # preempted with its KV in host memory (preemption_mode="swap")
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: int
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    arrival_s: float = 0.0
    token_ids: list[int] = field(default_factory=list)  # prompt + generated
    num_computed_tokens: int = 0  # tokens whose K/V are in the pool
    num_cached_tokens: int = 0  # of those, found in the prefix cache at the last admission
    num_draft_computed_tokens: int = 0  # speculative decoding: tokens with KV in the draft's pool
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None  # "stop" | "length"
    num_preemptions: int = 0
    first_token_s: float | None = None
    finish_s: float | None = None

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]
