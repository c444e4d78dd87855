"""Serving metrics from per-request timings: TTFT, TPOT, ITL, latency percentiles and goodput.

Goodput (DistServe, Zhong et al. OSDI '24) counts only the requests that met the service-level
objective: a server that answers 10 req/s with 2 s first tokens has a chat goodput of 0. The
measured load generator (minirt.bench.serve) and the simulator (minirt.tools.serving) both
summarise with `summarize`, so their curves compare point by point. Notebook 03.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Slo:
    ttft_ms: float  # time to first token, per request
    tpot_ms: float  # mean time per output token after the first, per request

    def met(self, ttft_s: float, tpot_s: float) -> bool:
        return ttft_s * 1e3 <= self.ttft_ms and tpot_s * 1e3 <= self.tpot_ms

    def to_dict(self) -> dict:
        return asdict(self)


# Three kinds of traffic (illustrative targets, as in notebook 03): a person reading a chat stream
# (TPOT 50 ms streams faster than anyone reads), an agent whose calls sit one after another on a
# task's critical path, and offline batch work that only needs to finish.
SLOS = {
    "chat": Slo(ttft_ms=500, tpot_ms=50),
    "agent": Slo(ttft_ms=1000, tpot_ms=10),
    "batch": Slo(ttft_ms=60_000, tpot_ms=1000),
}


@dataclass
class RequestTiming:
    """One answered request as the client saw it (seconds from the run's start)."""

    start_s: float
    ttft_s: float
    e2e_s: float
    output_tokens: int
    itl_s: list[float]  # gaps between consecutive streamed chunks
    # Where a first token's time goes before the engine (a load generator's own measurements):
    late_s: float | None = None  # sent this long after its scheduled arrival (a busy client)
    headers_s: float | None = None  # from the send to the response's headers (the HTTP intake)

    @property
    def tpot_s(self) -> float:
        return (self.e2e_s - self.ttft_s) / max(1, self.output_tokens - 1)


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default; nan if empty."""
    if not xs:
        return math.nan
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _stats(name: str, xs_s: list[float]) -> dict[str, float]:
    ms = [x * 1e3 for x in xs_s]
    mean = sum(ms) / len(ms) if ms else math.nan
    row = {f"{name}_mean_ms": mean}
    for q in (50, 90, 99):
        row[f"{name}_p{q}_ms"] = percentile(ms, q)
    return row


def summarize(done: list[RequestTiming], num_failed: int, duration_s: float, slo: Slo) -> dict:
    """One row: throughput, latency percentiles, SLO attainment and goodput."""
    duration_s = max(duration_s, 1e-9)
    good = [r for r in done if slo.met(r.ttft_s, r.tpot_s)]
    row = {
        "completed": len(done),
        "failed": num_failed,
        "duration_s": duration_s,
        "request_throughput": len(done) / duration_s,
        "output_throughput": sum(r.output_tokens for r in done) / duration_s,
        "goodput": len(good) / duration_s,
        "slo_attainment": len(good) / max(1, len(done) + num_failed),
    }
    row |= _stats("ttft", [r.ttft_s for r in done])
    row |= _stats("tpot", [r.tpot_s for r in done if r.output_tokens > 1])
    row |= _stats("itl", [gap for r in done for gap in r.itl_s])
    row |= _stats("e2e", [r.e2e_s for r in done])
    for name in ("late", "headers"):  # measured by a client, not by the simulator
        xs = [getattr(r, f"{name}_s") for r in done if getattr(r, f"{name}_s") is not None]
        if xs:
            row |= _stats(name, xs)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def max_rate_meeting(rows: list[dict], slo: Slo, q: int = 99) -> float | None:
    """The highest offered rate whose p`q` TTFT and TPOT both meet the SLO (None: no rate).
    A rate is requests/s, or "inf" (everything at once: JSON has no infinity)."""
    ok = [
        float(r["rate"])
        for r in rows
        if r.get(f"ttft_p{q}_ms") is not None
        and r["failed"] == 0
        and r[f"ttft_p{q}_ms"] <= slo.ttft_ms
        and (r.get(f"tpot_p{q}_ms") or 0.0) <= slo.tpot_ms
    ]
    return max(ok) if ok else None
