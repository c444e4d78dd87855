"""Lab 10 (labs/lab10_profiling.ipynb): find the hot spot in a recorded decode step.

Every case is a fresh variant of the H100's committed step (`minirt.tools.trace_variants`: host
times scaled, kernels jittered, a kernel planted slow or a chain left unfused, a side-stream copy
and early starts that overlap kernels). Task 1 reads the GPU lane (kernels, busy time with
overlaps counted once, share of the step); task 2 the host's launch cost (runtime calls, the mean
gap between kernels, the speedup graphs can buy, predicted from the eager trace and measured
against the graphed one); task 3 the hot spot (the kernels with the most time, the one event far
slower than its siblings); task 4 the advice, checked against what the variant planted. The
expected numbers are computed here, from the trace; the learner may not use minirt's summaries.
"""

from __future__ import annotations

import math
import random
from statistics import median
from types import SimpleNamespace
from typing import Any

from minirt.grading.core import Mismatch, Task
from minirt.grading.guard import Forbidden
from minirt.tools.trace_variants import ADVICE, GPU, RUNTIME, variant

FORBIDDEN = Forbidden(
    modules=("minirt.tools.profiling", "minirt.tools.trace_variants"),
    names=(
        "timeline_summary",
        "_busy_us",
        "kernel_table",
        "launch_overhead",
        "profile_decode",
        "Planted",
        "truth",
    ),
    what="minirt's profiling summaries (and the variants' planted truth)",
    allow=("profiling",),  # an everyday word; the module's contents stay refused
)

TUNE_SHARE = 0.03  # an outlier whose excess is more than this share of the GPU's busy time
FUSE_SHARE = 0.10  # generic elementwise kernels taking more than this share of it
ELEMENTWISE = "elementwise_kernel"


# -- the reference readings -----------------------------------------------------------------------
def gpu_events(trace: list[dict]) -> list[dict]:
    return sorted((r for r in trace if r["lane"] == GPU), key=lambda r: r["start_us"])


def busy_us(events: list[dict]) -> float:
    busy, end = 0.0, -math.inf
    for r in sorted(events, key=lambda r: r["start_us"]):
        stop = r["start_us"] + r["dur_us"]
        busy += max(0.0, stop - max(r["start_us"], end))
        end = max(end, stop)
    return busy


def span_us(trace: list[dict]) -> float:
    return max(r["start_us"] + r["dur_us"] for r in trace) - min(r["start_us"] for r in trace)


def idle_us(trace: list[dict]) -> float:
    """GPU idle time between its first kernel's start and its last kernel's end."""
    k = gpu_events(trace)
    return max(r["start_us"] + r["dur_us"] for r in k) - k[0]["start_us"] - busy_us(k)


def mean_gap_us(trace: list[dict]) -> float:
    return idle_us(trace) / (len(gpu_events(trace)) - 1)


def totals(trace: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in gpu_events(trace):
        out[r["name"]] = out.get(r["name"], 0.0) + r["dur_us"]
    return out


def top(trace: list[dict], n: int) -> list[tuple[str, float]]:
    return sorted(totals(trace).items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def outlier(trace: list[dict]) -> tuple[dict, float, float]:
    """(event, its duration over its name's median, the median): the most anomalous GPU event
    among names seen at least 3 times; ties to the earlier event."""
    by: dict[str, list[float]] = {}
    for r in gpu_events(trace):
        by.setdefault(r["name"], []).append(r["dur_us"])
    best, best_ratio, best_median = None, -1.0, 0.0
    for r in gpu_events(trace):
        if len(by[r["name"]]) >= 3:
            m = median(by[r["name"]])
            if r["dur_us"] / m > best_ratio:
                best, best_ratio, best_median = r, r["dur_us"] / m, m
    return best, best_ratio, best_median


def readings(trace: list[dict]) -> dict[str, float]:
    """The numbers the advice rests on."""
    k = gpu_events(trace)
    busy = busy_us(k)
    event, _, m = outlier(trace)
    generic = sum(r["dur_us"] for r in k if ELEMENTWISE in r["name"])
    return {
        "mean_gap_us": mean_gap_us(trace),
        "mean_kernel_us": busy / len(k),
        "outlier_excess": (event["dur_us"] - m) / busy,
        "elementwise_share": generic / busy,
        "busy_us": busy,
    }


def advice(trace: list[dict]) -> str:
    r = readings(trace)
    if r["mean_gap_us"] > r["mean_kernel_us"]:
        return "graphs"
    if r["outlier_excess"] > TUNE_SHARE:
        return "tune"
    if r["elementwise_share"] > FUSE_SHARE:
        return "fuse"
    return "nothing"


# -- drawing cases --------------------------------------------------------------------------------
def draw(rng: random.Random, i: int, plants=("none", "small", "slow", "unfused")):
    """A variant: the first cases the recorded modes without a plant, then anything."""
    fixed = [("graphs", "none"), ("eager", "none")]
    mode, plant = fixed[i] if i < len(fixed) else (rng.choice(("eager", "graphs")), None)
    if plant is None:
        plant = rng.choice([p for p in plants if mode == "graphs" or p != "unfused"])
    return variant(rng.randrange(2**32), mode, plant)


def _copy(trace: list[dict]) -> list[dict]:
    return [dict(r) for r in trace]


def _about(got: Any, want: float) -> bool:
    try:
        return math.isclose(float(got), want, rel_tol=1e-6, abs_tol=1e-3)
    except (TypeError, ValueError):
        return False


def _n(x: float) -> str:
    return f"{x:,.1f}"


def _v(x: Any, digits: int = 3) -> str:
    """A learner's number as the expected one is shown (their repr if it is not a number)."""
    try:
        return f"{float(x):,.{digits}f}"
    except (TypeError, ValueError):
        return repr(x)


def _what(v) -> str:
    t = v.truth
    planted = f", {t.plant} {t.kernel or ''}".rstrip() if t.plant != "none" else ""
    step = "an eager step" if t.mode == "eager" else "a step replayed from a CUDA graph"
    return f"{step} ({len(v.rows)} events{planted})"


def _dict(got: Any, keys: tuple[str, ...], call: str) -> dict:
    if not isinstance(got, dict) or not set(keys) <= set(got):
        raise Mismatch(f"{call} returned {got!r:.80}; expected a dict with keys {', '.join(keys)}")
    return got


# -- task 1: the GPU lane -------------------------------------------------------------------------
def check_gpu_lane(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    v = draw(rng, i)
    trace = v.rows
    call = f"gpu_lane(trace) on {_what(v)}"
    got = _dict(learner.gpu_lane(_copy(trace)), ("kernels", "busy_us", "share"), call)
    k = gpu_events(trace)
    runtime = sum(r["lane"] == RUNTIME for r in trace)
    if got["kernels"] != len(k):
        why = (
            f": {got['kernels']} is the number of runtime calls (the host's lane); count the "
            "GPU lane's events"
            if got["kernels"] == runtime
            else ": count the events on the GPU lane (kernels, copies and memsets)"
        )
        raise Mismatch(f"{call}: kernels {got['kernels']!r}, expected {len(k)}{why}")
    busy, total = busy_us(k), sum(r["dur_us"] for r in k)
    if not _about(got["busy_us"], busy):
        why = ": count each stretch of time once, however many kernels run in it"
        if _about(got["busy_us"], total):
            pairs = [
                (a, b)
                for a, b in zip(k, k[1:], strict=False)
                if b["start_us"] < a["start_us"] + a["dur_us"]
            ]
            a, b = pairs[0]
            why = (
                f": that is the sum of the durations, which counts overlapping kernels twice "
                f"({len(pairs)} overlap their predecessor, e.g. {b['name'][:40]} at "
                f"{_n(b['start_us'])} µs starts before {a['name'][:40]} ends)"
            )
        raise Mismatch(f"{call}: busy time {_v(got['busy_us'])} µs, expected {busy:,.3f} µs{why}")
    span = span_us(trace)
    if not _about(got["share"], busy / span):
        why = f" (busy {_n(busy)} µs over the step's {_n(span)} µs, first event to last end)"
        if _about(
            got["share"], busy / (max(r["start_us"] + r["dur_us"] for r in k) - k[0]["start_us"])
        ):
            why += ": you divided by the GPU lane's own extent, not the whole step's"
        raise Mismatch(f"{call}: share {_v(got['share'], 4)}, expected {busy / span:.4f}{why}")


# -- task 2: the host's launch cost ---------------------------------------------------------------
def check_launch(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    seed = rng.randrange(2**32)
    plant = rng.choice(("none", "small", "slow")) if i else "none"
    eager, graphed = variant(seed, "eager", plant), variant(seed, "graphs", plant)
    for v in (eager, graphed):
        call = f"host_cost(trace) on {_what(v)}"
        got = _dict(learner.host_cost(_copy(v.rows)), ("runtime_calls", "mean_gap_us"), call)
        calls = sum(r["lane"] == RUNTIME for r in v.rows)
        if got["runtime_calls"] != calls:
            raise Mismatch(f"{call}: runtime_calls {got['runtime_calls']!r}, expected {calls}")
        gap, k = mean_gap_us(v.rows), gpu_events(v.rows)
        if not _about(got["mean_gap_us"], gap):
            signed = [
                b["start_us"] - a["start_us"] - a["dur_us"] for a, b in zip(k, k[1:], strict=False)
            ]
            why = (
                ": a kernel that starts before the previous one ends leaves no gap, not a "
                "negative one"
                if _about(got["mean_gap_us"], sum(signed) / len(signed))
                else f": the GPU idles {_n(idle_us(v.rows))} µs between its first kernel's start "
                f"and its last one's end, over {len(k) - 1} gaps"
            )
            raise Mismatch(f"{call}: mean_gap_us {_v(got['mean_gap_us'])}, expected {gap:.3f}{why}")
    call = f"graph_speedup(eager, graphed) on {_what(eager)} and {_what(graphed)}"
    got = learner.graph_speedup(_copy(eager.rows), _copy(graphed.rows))
    if not (isinstance(got, tuple | list) and len(got) == 2):
        raise Mismatch(f"{call} returned {got!r:.80}; expected (predicted, measured)")
    se, sg, idle = span_us(eager.rows), span_us(graphed.rows), idle_us(eager.rows)
    predicted, measured = se / (se - idle), se / sg
    if not _about(got[1], measured):
        raise Mismatch(
            f"{call}: measured {_v(got[1])}, expected {measured:.3f} (the eager step "
            f"{_n(se)} µs over the graphed {_n(sg)} µs)"
        )
    if not _about(got[0], predicted):
        raise Mismatch(
            f"{call}: predicted {_v(got[0])}, expected {predicted:.3f}: the eager step is "
            f"{_n(se)} µs, and {_n(idle)} µs of it the GPU waits between kernels; a graph "
            "removes those waits and nothing else"
        )


# -- task 3: the hot spot -------------------------------------------------------------------------
def check_hot_spot(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    v = draw(rng, i)
    n = 5 if i % 2 else 3
    call = f"top_kernels(trace, {n}) on {_what(v)}"
    got = learner.top_kernels(_copy(v.rows), n)
    want = top(v.rows, n)
    try:
        pairs = [(str(a), float(b)) for a, b in got]
    except (TypeError, ValueError):
        raise Mismatch(f"{call} returned {got!r:.80}; expected [(name, total_us), ...]") from None
    if len(pairs) != n or any(
        a != wa or not _about(b, wb) for (a, b), (wa, wb) in zip(pairs, want, strict=False)
    ):
        shown = "; ".join(f"{a[:40]} {_n(b)} µs" for a, b in want)
        raise Mismatch(
            f"{call} returned {[(a[:40], round(b, 1)) for a, b in pairs]}; expected {shown} "
            "(each name's total time)"
        )
    call = f"slowest_sibling(trace) on {_what(v)}"
    got = learner.slowest_sibling(_copy(v.rows))
    event, ratio, m = outlier(v.rows)
    if not (isinstance(got, tuple | list) and len(got) == 2 and isinstance(got[0], dict)):
        raise Mismatch(f"{call} returned {got!r:.80}; expected (event, ratio)")
    e, r = got
    same = e.get("name") == event["name"] and _about(e.get("start_us"), event["start_us"])
    if not same:
        longest = max(gpu_events(v.rows), key=lambda r: r["dur_us"])
        siblings = sum(r["name"] == longest["name"] for r in gpu_events(v.rows))
        why = (
            f": that is the longest kernel, but it has {siblings - 1} sibling"
            f"{'s' if siblings != 2 else ''} to compare it with; measure each event against "
            "the median of its name"
            if e.get("name") == longest["name"] and _about(e.get("start_us"), longest["start_us"])
            else ""
        )
        raise Mismatch(
            f"{call} returned {str(e.get('name'))[:40]} at {e.get('start_us')!r} µs; expected "
            f"{event['name'][:40]} at {_n(event['start_us'])} µs, {_n(event['dur_us'])} µs "
            f"against a median of {m:.2f} µs for its name{why}"
        )
    if not _about(r, ratio):
        raise Mismatch(
            f"{call}: ratio {_v(r)}, expected {ratio:.3f} ({_n(event['dur_us'])} µs over the "
            f"median {m:.2f} µs)"
        )


# -- task 4: what to do ---------------------------------------------------------------------------
ADVICE_KINDS = [("eager", "none"), ("eager", "slow"), ("graphs", "none"), ("graphs", "small")]
ADVICE_KINDS += [("graphs", "slow"), ("graphs", "unfused")]  # each advice, the kinds in turn


def draw_advice(rng: random.Random, i: int):
    mode, plant = ADVICE_KINDS[i % len(ADVICE_KINDS)]
    return variant(rng.randrange(2**32), mode, plant)


def check_advice(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    v = draw_advice(rng, i)
    call = f"advice(trace) on {_what(v)}"
    got = learner.advice(_copy(v.rows))
    want = v.truth.advice
    if got == want:
        return
    if got not in ADVICE:
        raise Mismatch(f"{call} returned {got!r}; expected one of {', '.join(map(repr, ADVICE))}")
    r = readings(v.rows)
    raise Mismatch(
        f"{call} returned {got!r}; expected {want!r}: mean gap {r['mean_gap_us']:.2f} µs against "
        f"a mean kernel of {r['mean_kernel_us']:.2f} µs, the slowest sibling's excess "
        f"{r['outlier_excess']:.1%} and the generic elementwise kernels "
        f"{r['elementwise_share']:.1%} of the GPU's busy time"
    )


TASKS = [
    Task("1", "the GPU lane", 3, ("gpu_lane",), check_gpu_lane, num_cases=12, pure=True),
    Task(
        "2",
        "the host's launch cost",
        3,
        ("host_cost", "graph_speedup"),
        check_launch,
        num_cases=8,
        pure=True,
    ),
    Task(
        "3",
        "the hot spot",
        3,
        ("top_kernels", "slowest_sibling"),
        check_hot_spot,
        num_cases=12,
        pure=True,
    ),
    Task("4", "what would you do", 3, ("advice",), check_advice, num_cases=12, pure=True),
]
