"""What one engine step costs: a line fitted to measured minirt steps (the simulator's clock).

step_ms = base + per prompt token + per decoding sequence + per token of context read, plus once
for a step with prompt tokens (on CUDA those run eagerly; decode-only steps replay a graph), times
a factor drawn from the measured spread of such steps around the line. Fitted to a server's step
log (`GET /steps`), to a traced engine run, or derived from a `bench gpu` run.
`minirt.tools.serving` runs its engines on this clock. Notebook 03, section 6.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class CostModel:
    """step_ms = base_ms + prefill_ms * prefill tokens + decode_ms * decodes + context_ms * KV
    (+ eager_ms when the step has prompt tokens), the mean; `draw_ms` multiplies it by a factor
    drawn from the measured spread.

    `eager_ms` is what a step with prompt tokens pays once for not being a decode: on CUDA
    minirt replays a captured graph for a decode-only step and runs any other step eagerly, one
    Python-launched kernel at a time (notebook 05 shows the launch cost). Eager steps scatter far
    more than graphed ones (on the H100 run, 13 to 26 ms for the same work), so each kind has its
    own spread: measured/predicted ratios of logged steps at evenly spaced quantiles, empty for
    no spread. `frontend_ms` is not a step: it is what the way in and out adds to each token (the
    request's parse, the pipe to and from the engine process, the network), fitted as what the
    simulation lacks at a run's lowest rate (`bench serve`'s fit). `frontend_us_per_step` and
    `frontend_us_per_chunk` price the HTTP process as a server of its own (its CPU time,
    measured): one event loop that, whenever it is free, takes every step the engine finished
    since its last pass and writes one chunk per answer that got tokens in them (an answer that
    fell behind gets several steps' tokens in one chunk), and takes a new request in when the
    pass in progress ends. It saturates when it is busy all the time: chunks merge, intake
    waits, tokens arrive in bursts. `client_us_per_chunk` prices the load generator that
    measured a run the same way (one event loop reading every stream): to compare with that
    run; leave it at 0 to predict what a server's many separate clients would see."""

    base_ms: float
    prefill_ms: float  # per prompt token computed this step
    decode_ms: float  # per sequence decoding this step
    context_ms: float = 0.0  # per token of KV the step's decodes read
    eager_ms: float = 0.0  # once, for a step with prompt tokens
    frontend_ms: float = 0.0  # once per token delivered: HTTP and the client, not the engine
    frontend_us_per_step: float = 0.0  # the HTTP process's busy time per step it relays
    frontend_us_per_chunk: float = 0.0  # and per chunk it streams (one answer's tokens, a pass)
    client_us_per_chunk: float = 0.0  # the load generator's CPU per chunk it reads (0: none)
    eager_spread: tuple[float, ...] = ()  # measured / predicted, steps with prompt tokens
    graph_spread: tuple[float, ...] = ()  # measured / predicted, decode-only steps

    def step_ms(self, prefill_tokens: int, decodes: int, context_tokens: int) -> float:
        return (
            self.base_ms
            + self.prefill_ms * prefill_tokens
            + self.decode_ms * decodes
            + self.context_ms * context_tokens
            + (self.eager_ms if prefill_tokens else 0.0)
        )

    def draw_ms(
        self, prefill_tokens: int, decodes: int, context_tokens: int, rng: random.Random
    ) -> float:
        """One step's time: the line times one measured ratio of its kind, drawn at random."""
        spread = self.eager_spread if prefill_tokens else self.graph_spread
        factor = rng.choice(spread) if spread else 1.0
        return self.step_ms(prefill_tokens, decodes, context_tokens) * factor

    def to_dict(self) -> dict:
        """The terms, numbers only (a run's cost_model row keeps the spreads beside them)."""
        return {k: v for k, v in asdict(self).items() if not k.endswith("_spread")}


def fit_cost_model(steps: list[dict]) -> CostModel:
    """Least squares over measured steps {prefill_tokens, decodes, context_tokens, step_ms}, in
    two parts: decode-only steps price the fixed cost, each decode and each token of context
    (on CUDA: a graph replay); steps with prompt tokens then price what they cost beyond that,
    once (eager_ms) and per prompt token. With one kind of step only, one line fits them all.
    No coefficient below zero: one that comes out negative is dropped and the rest refitted (a
    noisy CPU can make a cost look negative; no step gets cheaper with more work). A stall, a
    step over `STALL` times what the first fit prices it at (a one-time compile, say: 1.1 s for
    a 4 ms step on the H100), is left out and the line fitted again: one such step would
    otherwise raise the price of every step with prompt tokens."""
    import numpy as np

    if len(steps) < 4:
        raise ValueError(f"fitting the costs needs at least 4 measured steps, got {len(steps)}")
    rows = np.array(
        [[s["prefill_tokens"], s["decodes"], s["context_tokens"], s["step_ms"]] for s in steps],
        dtype=float,
    )
    first = _fit_rows(rows)
    priced = np.array([first.step_ms(*r[:3]) for r in rows])
    calm = rows[rows[:, 3] <= STALL * priced]
    return first if len(calm) == len(rows) or len(calm) < 4 else _fit_rows(calm)


STALL = 10.0  # a step this many times its price is a stall, not a cost


def _fit_rows(rows) -> CostModel:
    import numpy as np

    eager, plain = rows[rows[:, 0] > 0], rows[rows[:, 0] == 0]
    ones = np.ones(len(rows))
    if len(eager) < 2 or len(plain) < 3:  # one kind of step: one line over everything
        x = np.c_[ones, rows[:, 0], rows[:, 1], rows[:, 2]]
        base, prefill, decode, context = _nonnegative_fit(x, rows[:, 3])
        return CostModel(base, prefill, decode, context)
    x = np.c_[np.ones(len(plain)), plain[:, 1], plain[:, 2]]
    base, decode, context = _nonnegative_fit(x, plain[:, 3])
    beyond = eager[:, 3] - (base + decode * eager[:, 1] + context * eager[:, 2])
    eager_ms, prefill = _nonnegative_fit(np.c_[np.ones(len(eager)), eager[:, 0]], beyond)
    return CostModel(base, prefill, decode, context, eager_ms)


def _nonnegative_fit(x, y) -> list[float]:
    import numpy as np

    keep = list(range(x.shape[1]))
    while keep:
        coef, *_ = np.linalg.lstsq(x[:, keep], y, rcond=None)
        if (coef >= 0).all():
            break
        keep.pop(int(np.argmin(coef)))
    full = [0.0] * x.shape[1]
    for column, c in zip(keep, coef if keep else [], strict=True):
        full[column] = float(c)
    return full


def with_spread(cost: CostModel, steps: list[dict], points: int = 50) -> CostModel:
    """`cost` with the spread of `steps` around it: measured/predicted ratios at `points` evenly
    spaced quantiles, one set for steps with prompt tokens, one for decode-only steps. The draws
    are independent; a real host's slow spells last seconds, which no draw reproduces."""
    import numpy as np

    ratios: dict[bool, list[float]] = {True: [], False: []}
    for s in steps:
        predicted = cost.step_ms(s["prefill_tokens"], s["decodes"], s["context_tokens"])
        ratios[s["prefill_tokens"] > 0].append(s["step_ms"] / predicted)
    at = (np.arange(points) + 0.5) / points  # bin midpoints: each quantile equally likely

    def quantiles(xs: list[float]) -> tuple[float, ...]:
        return tuple(round(float(q), 4) for q in np.quantile(xs, at)) if len(xs) >= points else ()

    return replace(
        cost, eager_spread=quantiles(ratios[True]), graph_spread=quantiles(ratios[False])
    )


def steps_from_trace(events: list[dict]) -> list[dict]:
    """Observations for `fit_cost_model` from a minirt trace's step events (LLM(trace=True)).
    A step lasts from the end of the previous one to its own end: scheduling, the forward, and
    the bookkeeping after it, everything the next request waits for."""
    rows, last_s = [], None
    for ev in events:
        if ev.get("type") != "step":
            continue
        decodes = [s for s in ev["scheduled"] if not s["is_prefill"]]
        if last_s is None:
            step_ms = ev["schedule_ms"] + ev["forward_ms"]
        else:
            step_ms = (ev["time_s"] - last_s) * 1e3
        last_s = ev["time_s"]
        rows.append(
            {
                "prefill_tokens": ev["num_prefill_tokens"],
                "decodes": len(decodes),
                "context_tokens": sum(s["num_computed_tokens"] + 1 for s in decodes),
                "step_ms": step_ms,
            }
        )
    return rows


def measured_steps(llm, lengths: list[tuple[int, int]], batch_sizes=(1, 4, 16)) -> list[dict]:
    """Steps of a real engine built with `LLM(..., trace=True)`, ready for `fit_cost_model`:
    the requests `lengths` (prompt, output) run in groups of each batch size."""
    import random

    from minirt.sampling_params import SamplingParams

    rng = random.Random(0)
    llm.generate([[1, 2, 3]], SamplingParams(max_tokens=2), use_tqdm=False)  # warm-up
    steps = []
    for size in batch_sizes:
        group = lengths[:size]
        prompts = [[rng.randrange(256) for _ in range(p)] for p, _ in group]
        params = [SamplingParams(temperature=0.0, max_tokens=o, ignore_eos=True) for _, o in group]
        llm.generate(prompts, params, use_tqdm=False)
        steps += steps_from_trace(llm.recorder.events)
    return steps


def cost_from_gpu_record(record: dict) -> CostModel:
    """A CostModel from a committed `bench gpu` run: decode steps of the CUDA-graph engine by
    batch size give base, per-sequence and per-context-token costs; prefill is priced at the
    measured bf16 matmul rate (2 FLOPs per weight per token)."""
    rows = record["results"]
    decode = [r for r in rows if r["name"] == "decode" and r["system"] == "minirt-graphs"]
    steps = []
    for r in decode:
        context = r["batch"] * (r["prompt_len"] + r["new_tokens"] // 2)
        steps.append(
            {
                "prefill_tokens": 0,
                "decodes": r["batch"],
                "step_ms": r["step_ms"],
                "context_tokens": context,
            }
        )
    fit = fit_cost_model(steps)
    weight_bytes = next(r["weight_bytes"] for r in rows if r["name"] == "roofline")
    tflops = next(r["tflop_per_s"] for r in rows if r["name"] == "bf16_matmul")
    prefill_ms = 2 * (weight_bytes / 2) / (tflops * 1e12) * 1e3  # bf16: 2 bytes a weight
    return CostModel(fit.base_ms, prefill_ms, fit.decode_ms, fit.context_ms)
