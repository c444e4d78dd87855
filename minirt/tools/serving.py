"""A discrete-event model of the server: arrivals -> continuous-batching scheduler -> step times.

Each step an `Engine` does what minirt's scheduler does: running sequences decode one token each,
then waiting ones are admitted first-come-first-served under the token budget (prompts chunked),
while KV tokens and batch slots last. A step lasts what a `CostModel` says, a line fitted to
measured minirt steps: fixed cost + per prefill token + per decoding sequence + per token of
context read (+ once for a step with prompt tokens), times a factor drawn (seeded) from the
measured scatter of such steps; each token then reaches the client `frontend_ms` later (HTTP),
after the HTTP process got to it: one event loop per engine (`HttpProcess`) that, each time it is
free, streams every step finished since its last pass, one chunk per answer, and takes new
requests in between passes, at a measured CPU cost per step and per chunk.
It predicts the latency-throughput curve (and goodput) without running a model, and answers what
one machine cannot show (`ClusterModel`): N replicas behind a router (round-robin or
least-outstanding), another token budget, prefill and decode on separate engines with each
prompt's KV copied between them (DistServe, Splitwise).

Vidur (Agrawal et al., MLSys '24) is the anchor for such simulators. Where ours differs: Vidur
profiles each operator (GEMMs, attention by prefill/decode shape, all-reduce) and predicts them
with random forests, so one profile covers many models and parallel layouts; it simulates
tensor and pipeline parallelism, global and per-replica schedulers, and preemption. Ours fits five
numbers to whole-step times of one model on one device and draws each step's scatter from the
same log; replicas are copies of that one engine, no preemption (a request waits until its whole
prompt and output fit the pool), the KV copy is bytes / a measured bandwidth (no contention, no
overlap with compute), and the HTTP front end is one measured latency plus one event loop per
engine, priced by its measured CPU time per relayed step and per streamed chunk.
Notebook 03.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import asdict, dataclass

from minirt.tools.serving_cost import (
    CostModel,
    cost_from_gpu_record,
    fit_cost_model,
    measured_steps,
    steps_from_trace,
    with_spread,
)
from minirt.tools.slo import RequestTiming, Slo, summarize

# the cost model lives beside; callers import it from here too
__all__ = [
    "ClusterModel",
    "CostModel",
    "Engine",
    "Router",
    "SchedulerModel",
    "SimRequest",
    "cost_from_gpu_record",
    "fit_cost_model",
    "measured_steps",
    "predict_curve",
    "simulate",
    "steps_from_trace",
    "with_spread",
]


@dataclass
class SimRequest:
    arrival_s: float
    prompt_len: int
    output_len: int

    @classmethod
    def sent(cls, times: list[float], lengths: list[tuple[int, int]]) -> list[SimRequest]:
        """Requests sent at `times`, with (prompt, output) `lengths` in the same order."""
        return [cls(t, p, o) for t, (p, o) in zip(times, lengths, strict=True)]


@dataclass
class SchedulerModel:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048  # the chunked-prefill token budget of one step
    kv_capacity_tokens: int = 1 << 30  # the pool; a request is admitted when all of it fits


ROUTERS = ("round_robin", "least_outstanding")


@dataclass(frozen=True)
class ClusterModel:
    """Where requests run. Colocated: `replicas` engines behind a router, each prefilling and
    decoding. Disaggregated (DistServe, Splitwise), when `prefill` > 0: `prefill` engines only
    prefill, `decode` engines only decode, and each prompt's KV moves from one to the other at
    `transfer_gbps`, so the first token reaches the client after prefill + transfer."""

    replicas: int = 1
    router: str = "round_robin"  # or "least_outstanding": fewest waiting + running requests
    prefill: int = 0
    decode: int = 0
    kv_bytes_per_token: int = 0  # minirt.kv.kv_cache_bytes_per_token of the model
    transfer_gbps: float = math.inf  # GB/s of the copy from prefill to decode engine

    def __post_init__(self):
        if self.router not in ROUTERS:
            raise ValueError(f"unknown router {self.router!r}; choose one of {ROUTERS}")
        if min(self.replicas, self.prefill, self.decode) < 0 or self.replicas < 1:
            raise ValueError("replicas must be >= 1 and prefill/decode >= 0")
        if (self.prefill > 0) != (self.decode > 0):
            raise ValueError("disaggregation needs both prefill > 0 and decode > 0 engines")

    @property
    def disaggregated(self) -> bool:
        return self.prefill > 0

    @property
    def gpus(self) -> int:
        return self.prefill + self.decode if self.disaggregated else self.replicas

    def transfer_s(self, prompt_len: int) -> float:
        """Seconds to move one prompt's KV: bytes / bandwidth (the first token's KV is not
        there yet: the decode engine writes it in its first step)."""
        return prompt_len * self.kv_bytes_per_token / (self.transfer_gbps * 1e9)

    def to_dict(self) -> dict:
        return asdict(self)


class Engine:
    """One engine as minirt's scheduler runs it: each step, running sequences decode one token
    (or take their next prompt chunk), then waiting ones are admitted first-come-first-served
    under the token budget while KV and batch slots last. `role` "prefill" hands a request off
    when its prompt is done; "decode" receives requests whose prompt is already computed."""

    def __init__(
        self,
        requests: list[SimRequest],
        cost: CostModel,
        sched,
        role: str = "both",
        rng: random.Random | None = None,
    ):
        self.requests, self.cost, self.sched, self.role = requests, cost, sched, role
        self.rng = rng or random.Random(0)  # draws each step's scatter around the cost line
        self.waiting: deque[int] = deque()
        self.running: dict[int, list[int]] = {}  # id -> [prompt tokens computed, generated]
        self.kv_used = 0
        self.busy_until: float | None = None  # end of the step in flight
        self.http = HttpProcess(cost.frontend_us_per_step, cost.frontend_us_per_chunk)
        self.chunks: dict[int, int] = {}  # this step's prompt tokens per request
        self.decoding: set[int] = set()

    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    def kv_need(self, i: int) -> int:
        r = self.requests[i]
        return r.prompt_len if self.role == "prefill" else r.prompt_len + r.output_len

    def start_step(self, now: float) -> None:
        """Plan one step at `now` and price it; nothing to run leaves the engine idle."""
        budget, context, chunks, decoding = self.sched.max_num_batched_tokens, 0, {}, set()
        for i, (done, gen) in self.running.items():
            left = self.requests[i].prompt_len - done
            if left == 0 and budget > 0:
                decoding.add(i)
                context, budget = context + done + gen, budget - 1
            elif left > 0 and budget > 0:
                chunks[i] = min(budget, left)
                budget -= chunks[i]
        while self.waiting and budget > 0 and len(self.running) < self.sched.max_num_seqs:
            i = self.waiting[0]
            if self.kv_used + self.kv_need(i) > self.sched.kv_capacity_tokens:
                break
            self.waiting.popleft()
            self.kv_used += self.kv_need(i)
            r = self.requests[i]
            if self.role == "decode":  # arrives with its prompt's KV and its first token
                self.running[i] = [r.prompt_len, 1]
                decoding.add(i)
                context, budget = context + r.prompt_len + 1, budget - 1
            else:
                self.running[i] = [0, 0]
                chunks[i] = min(budget, r.prompt_len)
                budget -= chunks[i]
        if chunks or decoding:
            self.chunks, self.decoding = chunks, decoding
            ms = self.cost.draw_ms(sum(chunks.values()), len(decoding), context, self.rng)
            self.busy_until = now + ms / 1e3

    def end_step(self) -> tuple[list[int], list[int]]:
        """Apply the step: (requests that got a token, requests handed off to decode)."""
        tokens, handoffs = [], []
        for i in list(self.running):
            r, state = self.requests[i], self.running[i]
            if i in self.chunks:
                state[0] += self.chunks[i]
                if state[0] < r.prompt_len:
                    continue  # more prompt chunks to go: no token yet
                if self.role == "prefill":
                    handoffs.append(i)  # the first token goes with the KV
                    self._free(i)
                    continue
            elif i not in self.decoding:
                continue  # no room in this step's budget
            state[1] += 1
            tokens.append(i)
            if state[1] == r.output_len:
                self._free(i)
        self.busy_until, self.chunks, self.decoding = None, {}, set()
        return tokens, handoffs

    def _free(self, i: int) -> None:
        self.kv_used -= self.kv_need(i)
        del self.running[i]


class HttpProcess:
    """The HTTP side of one engine as an event loop. A step's tokens wait until the loop is free;
    then one pass takes every step finished since the last one and writes one chunk per answer
    that got tokens (merged when it fell behind), costing `us_per_step` per step and
    `us_per_chunk` per chunk; a new request is taken in when the pass in progress ends. At no
    cost every token goes out when its step ends. The load generator that measures a server is
    one more such loop (its chunks cost it `CostModel.client_us_per_chunk`)."""

    def __init__(self, us_per_step: float, us_per_chunk: float) -> None:
        self.us_per_step, self.us_per_chunk = us_per_step, us_per_chunk
        self.busy_until: float | None = None  # end of the pass in progress
        self.writing: list[int] = []  # whose tokens that pass delivers (one entry per token)
        self.steps, self.tokens = 0, []  # what waits for the next pass

    def take(self, now: float, tokens: list[int]) -> list[int]:
        """A step ended with these tokens: what goes out now (at no cost: all of them)."""
        self.steps, self.tokens = self.steps + 1, self.tokens + tokens
        return self.start(now)

    def intake_at(self, now: float) -> float:
        """When a request arriving now is taken in: once the pass in progress is over."""
        return now if self.busy_until is None else self.busy_until

    def finish(self) -> list[int]:
        """The pass in progress ended: whose tokens it delivered."""
        done, self.writing, self.busy_until = self.writing, [], None
        return done

    def start(self, now: float) -> list[int]:
        """Begin a pass when idle and given work; a pass that costs nothing delivers at once."""
        if self.busy_until is not None or not self.steps:
            return []
        us = self.us_per_step * self.steps + self.us_per_chunk * len(set(self.tokens))
        tokens, self.steps, self.tokens = self.tokens, 0, []
        if us <= 0:
            return tokens
        self.busy_until, self.writing = now + us / 1e6, tokens
        return []


class Router:
    """Picks an engine for each request: in turn, or the one with the fewest outstanding."""

    def __init__(self, engines: list[Engine], policy: str):
        self.engines, self.policy, self.turn = engines, policy, 0

    def pick(self) -> Engine:
        if self.policy == "least_outstanding":
            return min(self.engines, key=Engine.outstanding)  # ties: the first
        engine = self.engines[self.turn % len(self.engines)]
        self.turn += 1
        return engine


def simulate(
    requests: list[SimRequest],
    cost: CostModel,
    sched: SchedulerModel,
    cluster: ClusterModel | None = None,
    seed: int = 0,
) -> list:
    """Run the model to the end; one RequestTiming per request, in the order given. Events in
    time order: steps that end, then requests (and KV) that arrive, then idle engines start.
    `seed` fixes the step-time draws (the same seed, the same timings)."""
    cluster = cluster or ClusterModel()
    _check_fits(requests, sched, cluster)
    rng = random.Random(seed)
    if cluster.disaggregated:
        front = [Engine(requests, cost, sched, "prefill", rng) for _ in range(cluster.prefill)]
        back = [Engine(requests, cost, sched, "decode", rng) for _ in range(cluster.decode)]
    else:
        front = [Engine(requests, cost, sched, rng=rng) for _ in range(cluster.replicas)]
        back = []
    to_front, to_back = Router(front, cluster.router), Router(back, cluster.router)
    arrivals = [(r.arrival_s, i, "request") for i, r in enumerate(requests)]
    heapq.heapify(arrivals)  # (time, id, kind): requests, and KV landing on the decode side
    stamps: dict[int, list[float]] = {i: [] for i in range(len(requests))}
    engines = front + back
    client = HttpProcess(0.0, cost.client_us_per_chunk)  # the load generator, when priced
    loops = [client] + [e.http for e in engines]

    def written(ids: list[int]) -> None:  # tokens an HTTP process wrote: to the client's loop
        for i in client.take(now, ids):
            stamps[i].append(now)

    while arrivals or any(x.busy_until is not None for x in engines + loops):
        busy = [x.busy_until for x in engines + loops if x.busy_until is not None]
        now = min(busy + [arrivals[0][0]] if arrivals else busy)
        if client.busy_until == now:
            for i in client.finish():
                stamps[i].append(now)
        for engine in engines:
            if engine.http.busy_until == now:
                written(engine.http.finish())
            if engine.busy_until == now:
                tokens, handoffs = engine.end_step()
                written(engine.http.take(now, tokens))
                for i in handoffs:
                    heapq.heappush(
                        arrivals, (now + cluster.transfer_s(requests[i].prompt_len), i, "kv")
                    )
        while arrivals and arrivals[0][0] <= now:
            _, i, kind = heapq.heappop(arrivals)
            if kind == "request":  # taken in once its engine's HTTP process ends its pass
                engine = to_front.pick()
                heapq.heappush(arrivals, (engine.http.intake_at(now), i, engine))
                continue
            if isinstance(kind, Engine):  # taken in: it waits for the scheduler
                kind.waiting.append(i)
                continue
            stamps[i].append(now)  # the first token, delivered once its KV has landed
            if requests[i].output_len > 1:
                to_back.pick().waiting.append(i)
        for engine in engines:
            written(engine.http.start(now))
            if engine.busy_until is None:
                engine.start_step(now)
    # each token reaches the client frontend_ms after its step: TTFT and latency grow, TPOT not
    shift = cost.frontend_ms / 1e3
    return [_timing(r, [t + shift for t in stamps[i]]) for i, r in enumerate(requests)]


def _check_fits(requests: list[SimRequest], sched: SchedulerModel, cluster: ClusterModel):
    for i, r in enumerate(requests):
        need = r.prompt_len + r.output_len
        if need > sched.kv_capacity_tokens:
            raise ValueError(
                f"request {i} needs {need:,} KV tokens but an engine's pool holds "
                f"{sched.kv_capacity_tokens:,}; raise kv_capacity_tokens or shorten it"
            )
        if r.output_len < 1:
            raise ValueError(f"request {i} asks for {r.output_len} output tokens; at least 1")


def _timing(r: SimRequest, stamps: list[float]) -> RequestTiming:
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return RequestTiming(
        r.arrival_s, stamps[0] - r.arrival_s, stamps[-1] - r.arrival_s, r.output_len, gaps
    )


def predict_curve(
    lengths: list[tuple[int, int]],
    arrivals: dict[float, list[float]],
    cost: CostModel,
    sched: SchedulerModel,
    slo: Slo,
    cluster: ClusterModel | None = None,
    seed: int = 0,
) -> list[dict]:
    """One row per rate, shaped like `bench serve`'s: `arrivals` maps a rate to send times."""
    rows = []
    for rate, times in arrivals.items():
        timings = simulate(SimRequest.sent(times, lengths), cost, sched, cluster, seed)
        duration = max(r.start_s + r.e2e_s for r in timings) - min(times)
        row = {"name": "simulated", "rate": "inf" if math.isinf(rate) else rate}
        rows.append(row | summarize(timings, 0, duration, slo))
    return rows
