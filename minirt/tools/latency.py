"""Latency and throughput from a trace: TTFT, TPOT and tokens/s, and a batch-size sweep.

TTFT (time to first token) = first_token_s - arrival_s; TPOT (time per output token) =
(finish_s - first_token_s) / (output tokens - 1); throughput = output tokens / makespan. All come
from the RequestEvents the engine records. Notebook 03 (latency vs throughput).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from minirt.sampling_params import SamplingParams


@dataclass
class RequestMetrics:
    seq_id: int
    ttft_s: float
    tpot_s: float | None  # None for a request with a single output token
    e2e_s: float
    num_output_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def request_metrics(events: Iterable[Mapping[str, Any]]) -> list[RequestMetrics]:
    """Per-request metrics from trace events (finished requests only)."""
    out = []
    for e in events:
        if e["type"] != "request" or e["finish_s"] is None or e["first_token_s"] is None:
            continue
        n = e["num_output_tokens"]
        tpot = (e["finish_s"] - e["first_token_s"]) / (n - 1) if n > 1 else None
        out.append(
            RequestMetrics(
                e["seq_id"],
                e["first_token_s"] - e["arrival_s"],
                tpot,
                e["finish_s"] - e["arrival_s"],
                n,
            )
        )
    return out


def summarize(metrics: Sequence[RequestMetrics]) -> dict[str, float]:
    """Mean TTFT and TPOT, and output tokens/s over the makespan (first arrival to last finish)."""
    if not metrics:
        raise ValueError("no finished requests to summarize")
    tpots = [m.tpot_s for m in metrics if m.tpot_s is not None]
    tokens = sum(m.num_output_tokens for m in metrics)
    return {
        "num_requests": len(metrics),
        "mean_ttft_s": statistics.fmean(m.ttft_s for m in metrics),
        "mean_tpot_s": statistics.fmean(tpots) if tpots else float("nan"),
        "tokens_per_s": tokens / max(m.e2e_s for m in metrics),
    }


def sweep_batch_sizes(
    llm: Any, prompts: Sequence, batch_sizes: Sequence[int], max_tokens: int = 32
) -> list[dict[str, Any]]:
    """For each batch size b, serve b requests at once (all admitted in step 0) and summarize.

    A short untimed warm-up runs first, so one-off costs (allocator, thread pool) stay out.
    """
    if llm.recorder is None and not llm.config.trace:
        raise ValueError("the sweep reads RequestEvents; build the engine with trace=True")
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    warm = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    llm.generate([prompts[0]], warm, use_tqdm=False)
    rows = []
    for b in batch_sizes:
        batch = [prompts[i % len(prompts)] for i in range(b)]
        llm.generate(batch, params, use_tqdm=False)
        rows.append({"batch_size": b, **summarize(request_metrics(llm.recorder.events))})
    return rows
