"""Trace events: what the engine did, as plain data.

Each event is a dataclass whose `to_dict()` is JSON-serialisable and carries a `"type"` field;
`from_dict()` rebuilds it from a loaded trace. The JSON schemas that `load_trace` checks live in
`minirt/trace/schema.py`; keep the two in step when a field changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar


@dataclass
class ScheduledSeq:
    """One sequence in a step's batch: how many tokens it feeds the model this step."""

    seq_id: int
    num_new_tokens: int  # tokens computed this step (a prefill chunk, or 1 for decode)
    num_computed_tokens: int  # tokens whose KV was already in the cache before this step
    is_prefill: bool


@dataclass
class StepEvent:
    """One engine step: the scheduler's decision, the KV pool after it, and the time it took."""

    TYPE: ClassVar[str] = "step"

    step: int
    time_s: float  # seconds since the engine started
    scheduled: list[ScheduledSeq]
    num_prefill_tokens: int
    num_decode_tokens: int
    num_running: int
    num_waiting: int
    preempted: list[int]
    finished: list[int]
    block_tables: dict[int, list[int]]  # seq_id -> physical block ids, in logical order
    num_free_blocks: int
    num_cached_blocks: int
    prefix_hit_tokens: int  # prompt tokens found in the prefix cache this step
    schedule_ms: float
    forward_ms: float
    # preemption_mode="swap" (optional in the schema: traces from before swap still load)
    swapped_out: list[int] = field(default_factory=list)  # seq ids whose KV went to the host
    swapped_in: list[int] = field(default_factory=list)  # seq ids whose KV came back
    num_swapped: int = 0  # sequences waiting in host memory after this step
    swap_blocks: int = 0  # blocks copied either way this step
    # speculative decoding, per speculating sequence: seq_id, proposed (the draft's guesses),
    # num_accepted, emitted, table_before (with the lookahead slots), freed_blocks (by the rollback)
    spec: list[dict[str, Any]] = field(default_factory=list)
    cpu_ms: float = 0.0  # host: schedule, build inputs, read tokens, update (notebook 11)
    device_ms: float = 0.0  # the forward and sampling (CUDA events; CPU: wall time)
    overlap: bool = False  # overlap_schedule: cpu_ms of step n + 1 ran during device_ms of n
    cache: dict[str, Any] = field(default_factory=dict)  # trace_cache=True: the prefix cache

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepEvent:
        kwargs = _known_fields(cls, d)
        kwargs["scheduled"] = [ScheduledSeq(**s) for s in d["scheduled"]]
        kwargs["block_tables"] = {int(k): list(v) for k, v in d["block_tables"].items()}
        return cls(**kwargs)


@dataclass
class RequestEvent:
    """One request's life, for latency metrics (TTFT = first_token_s - arrival_s)."""

    TYPE: ClassVar[str] = "request"

    seq_id: int
    prompt_len: int
    arrival_s: float
    first_token_s: float | None = None
    finish_s: float | None = None
    num_output_tokens: int = 0
    finish_reason: str | None = None  # "stop", "length", ... or None while unfinished

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestEvent:
        return cls(**_known_fields(cls, d))


@dataclass
class IntervalEvent:
    """One bar of a stream timeline: what a stream (or the host thread) did from start to end.

    `minirt.transfer` records these with CUDA events on an H100; `minirt.tools.streams` predicts
    them; the dashboard's Streams page draws either. Times are ms from the start of the run.
    """

    TYPE: ClassVar[str] = "interval"

    lane: str  # a stream ("compute", "copy"), or "cpu" for the host thread
    name: str
    kind: str  # "h2d", "d2h", "d2d", "kernel", "host" (CPU work), "blocked" (CPU held by a call)
    start_ms: float
    end_ms: float
    nbytes: int = 0
    run: str = ""  # which program or experiment this bar belongs to

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntervalEvent:
        return cls(**_known_fields(cls, d))


def _known_fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """The entries of `d` that are fields of `cls` (newer traces may carry more; we ignore them)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}
