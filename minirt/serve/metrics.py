"""Prometheus metrics of the server: queue lengths, KV blocks, prefix hits, TTFT and TPOT.

Gauges read the engine loop's last snapshot when /metrics is scraped; the histograms get one
observation per finished request. Each app has its own registry (no global state), so two
servers in one process, as in the tests, do not mix their numbers. Notebook 03.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from minirt.serve.engine_loop import EngineLoop, ServeRequest

# Seconds: from a few ms (the embedded model on CPU, an H100 decode) to a slow CPU prefill.
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServerMetrics:
    def __init__(self, engine: EngineLoop) -> None:
        self.registry = r = CollectorRegistry()
        snap = lambda name: lambda: getattr(engine.snapshot, name)  # noqa: E731
        gauges = {
            "num_requests_running": ("requests in the running batch", "num_running"),
            "num_requests_waiting": ("requests queued for a batch slot", "num_waiting"),
            "kv_blocks_used": ("KV blocks held by requests", "num_blocks_used"),
            "kv_blocks_total": ("KV blocks in the pool", "num_blocks"),
            "prefix_cache_hit_rate": ("prompt tokens found cached", "prefix_cache_hit_rate"),
        }
        for name, (doc, field) in gauges.items():
            Gauge(f"minirt_{name}", doc, registry=r).set_function(snap(field))
        self.ttft = Histogram(
            "minirt_time_to_first_token_seconds",
            "arrival to first token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "minirt_time_per_output_token_seconds",
            "decode time per token after the first",
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "minirt_e2e_request_latency_seconds",
            "arrival to last token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.finished = Counter(
            "minirt_requests_finished", "by finish reason", ["finish_reason"], registry=r
        )
        self.prompt_tokens = Counter("minirt_prompt_tokens", "prompt tokens", registry=r)
        self.generation_tokens = Counter("minirt_generation_tokens", "generated", registry=r)

    def observe(self, req: ServeRequest) -> None:
        """One finished request (called by the engine loop, in its thread)."""
        self.finished.labels(req.finish_reason).inc()
        self.prompt_tokens.inc(len(req.prompt_token_ids))
        self.generation_tokens.inc(req.num_output_tokens)
        if req.first_token_s is None:
            return
        self.ttft.observe(req.first_token_s - req.arrival_s)
        self.e2e.observe(req.finish_s - req.arrival_s)
        if req.num_output_tokens > 1:
            decode_s = req.finish_s - req.first_token_s
            self.tpot.observe(decode_s / (req.num_output_tokens - 1))

    def text(self) -> bytes:
        return generate_latest(self.registry)
