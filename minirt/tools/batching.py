"""Static vs continuous batching: the same requests served both ways, on the engine and on paper.

Static batching runs a batch until its longest request ends, and only then admits the next;
continuous batching refills a slot the step after a request finishes. `serve_static` and
`serve_continuous` measure both on the engine; `static_schedule` / `continuous_schedule` predict
the running count at every step from output lengths alone (a request's prefill step samples its
first token, so a request of n output tokens runs n steps).
Notebook 02 (scheduling).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from minirt.sampling_params import SamplingParams


@dataclass
class BatchingRun:
    policy: str
    num_steps: int
    num_generated_tokens: int
    wall_s: float
    batch_size: int
    running_per_step: list[int] = field(default_factory=list)  # sequences in each step's batch

    @property
    def slot_utilisation(self) -> float:
        """Tokens generated / (steps x batch slots): 1.0 means no slot ever idled."""
        return self.num_generated_tokens / (self.num_steps * self.batch_size)

    @property
    def tokens_per_s(self) -> float:
        return self.num_generated_tokens / self.wall_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "num_steps": self.num_steps,
            "num_generated_tokens": self.num_generated_tokens,
            "wall_s": self.wall_s,
            "slot_utilisation": self.slot_utilisation,
            "tokens_per_s": self.tokens_per_s,
        }


def _steps(llm: Any) -> list[dict]:
    return [e for e in llm.recorder.events if e["type"] == "step"]


def serve_static(
    llm: Any, prompts: Sequence, params: Sequence[SamplingParams], batch_size: int
) -> BatchingRun:
    """One generate() per batch of `batch_size` requests: nobody joins until all have finished."""
    running, tokens, t0 = [], 0, time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        llm.generate(
            list(prompts[i : i + batch_size]), list(params[i : i + batch_size]), use_tqdm=False
        )
        running += [len(e["scheduled"]) for e in _steps(llm)]
        tokens += llm.last_stats.num_generated_tokens
    wall = time.perf_counter() - t0
    return BatchingRun("static", len(running), tokens, wall, batch_size, running)


def serve_continuous(
    llm: Any, prompts: Sequence, params: Sequence[SamplingParams], batch_size: int
) -> BatchingRun:
    """All requests in one generate(); the scheduler keeps at most `batch_size` running."""
    if llm.config.max_num_seqs != batch_size:
        raise ValueError(
            f"the engine runs up to max_num_seqs={llm.config.max_num_seqs} sequences, not "
            f"{batch_size}; build it with LLM(..., max_num_seqs={batch_size}, trace=True)"
        )
    t0 = time.perf_counter()
    llm.generate(list(prompts), list(params), use_tqdm=False)
    wall = time.perf_counter() - t0
    running = [len(e["scheduled"]) for e in _steps(llm)]
    tokens = llm.last_stats.num_generated_tokens
    return BatchingRun("continuous", len(running), tokens, wall, batch_size, running)


def static_schedule(output_lens: Sequence[int], batch_size: int) -> list[int]:
    """Running requests at each step of static batching: a batch lasts as long as its longest
    request, and its finished requests leave empty slots until then."""
    running = []
    for i in range(0, len(output_lens), batch_size):
        batch = output_lens[i : i + batch_size]
        running += [sum(n > t for n in batch) for t in range(max(batch))]
    return running


def continuous_schedule(output_lens: Sequence[int], batch_size: int) -> list[int]:
    """Running requests at each step of continuous batching: a slot freed by a request that
    finished is refilled (first come, first served) at the next step."""
    queue, running, out = deque(output_lens), [], []
    while queue or running:
        while queue and len(running) < batch_size:
            running.append(queue.popleft())
        out.append(len(running))
        running = [n - 1 for n in running if n > 1]  # every running request gets one token
    return out
