"""Decode with and without a KV cache, on the same engine and weights.

Without a cache, every new token means running the whole sequence through the model again
(prefix caching off, one fresh prefill per token); with it, a decode step computes one token
and reads the past from the pool. Both return per-token forward times from the engine's trace.
Notebook 01 (KV cache) plots them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minirt.sampling_params import SamplingParams


@dataclass
class DecodeRun:
    token_ids: list[int]  # generated tokens
    forward_ms: list[float] = field(default_factory=list)  # one per generated token
    tokens_computed: list[int] = field(default_factory=list)  # tokens through the model, per token


def _forward_steps(llm: Any) -> list[dict]:
    if llm.recorder is None:
        raise ValueError("the engine records no trace; build it with LLM(..., trace=True)")
    return [e for e in llm.recorder.events if e["type"] == "step"]


def decode_with_cache(llm: Any, prompt: list[int], num_tokens: int) -> DecodeRun:
    """Greedy-generate `num_tokens` in one request: one prefill, then one-token decode steps."""
    params = SamplingParams(temperature=0.0, max_tokens=num_tokens, ignore_eos=True)
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    steps = _forward_steps(llm)
    return DecodeRun(
        token_ids=out.token_ids,
        forward_ms=[s["forward_ms"] for s in steps],
        tokens_computed=[s["num_prefill_tokens"] + s["num_decode_tokens"] for s in steps],
    )


def decode_without_cache(llm: Any, prompt: list[int], num_tokens: int) -> DecodeRun:
    """Greedy-generate `num_tokens` by re-running the whole sequence for every token."""
    if llm.config.prefix_cache is not None:
        raise ValueError(
            "prefix caching would keep the previous call's KV and so act as a cache; build the "
            "engine with LLM(..., prefix_cache=None, trace=True)"
        )
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    run = DecodeRun(token_ids=[])
    ids = list(prompt)
    for _ in range(num_tokens):
        token = llm.generate([ids], params, use_tqdm=False)[0].token_ids[0]
        steps = _forward_steps(llm)
        run.forward_ms.append(sum(s["forward_ms"] for s in steps))
        run.tokens_computed.append(sum(s["num_prefill_tokens"] for s in steps))
        run.token_ids.append(token)
        ids.append(token)
    return run
