"""How to pick the next token: greedy, temperature, top-k, top-p; seeded for reproducibility.

Invalid values fail at construction, saying which range is allowed, and `generate()` checks
every request again before it queues any. The semantics follow vLLM's `SamplingParams`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from minirt.checks import MAX_SEED, as_float, as_int


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy
    top_k: int = -1  # -1 disables
    top_p: float = 1.0  # 1 disables
    max_tokens: int = 64
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field and store it as a plain Python value (numpy ints become ints);
        `generate()` calls it again: a field may have been changed after construction."""
        self.temperature = as_float("temperature", self.temperature, 0.0, hint="; 0 = greedy")
        self.top_p = as_float("top_p", self.top_p)
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        self.top_k = as_int("top_k", self.top_k)
        if self.top_k == 0 or self.top_k < -1:
            raise ValueError(f"top_k must be -1 (off) or >= 1, got {self.top_k}")
        self.max_tokens = as_int("max_tokens", self.max_tokens, 1)
        if self.seed is not None:
            self.seed = as_int("seed", self.seed, 0, MAX_SEED, hint="; None means unseeded")
        self.stop = _stop_strings(self.stop)
        if not isinstance(self.ignore_eos, bool | np.bool_):
            raise ValueError(f"ignore_eos must be True or False, got {self.ignore_eos!r}")
        self.ignore_eos = bool(self.ignore_eos)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _stop_strings(stop) -> list[str]:
    """`stop` as a list of non-empty strings (one string is a list of one)."""
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
        raise ValueError(f"stop must be a string or a list of strings, got {stop!r:.80}")
    if any(not s for s in stop):
        raise ValueError("stop strings must be non-empty")
    return list(stop)
