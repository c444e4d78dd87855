"""A two-stream timeline of one MoE layer: the compute stream and the communication stream.

Each micro-batch runs attention -> dispatch -> experts -> combine (compute, comm, compute,
comm); a stream runs its operations in order, each as soon as its input is ready. With one
micro-batch every transfer stalls the GPU; with two (SGLang's two-batch overlap, DeepSeek's
dual micro-batch) one half's transfers hide behind the other half's compute. Notebook 12 and
the dashboard's MoE page draw it; `minirt.tools.moe.layer_time` prices the operations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

COMPUTE, COMM = "compute", "comm"
STAGES = (("attention", COMPUTE), ("dispatch", COMM), ("experts", COMPUTE), ("combine", COMM))


@dataclass
class Interval:
    stream: str  # "compute" | "comm"
    op: str  # attention | shared | dispatch | experts | combine
    micro_batch: int
    start: float  # seconds (or whatever unit the durations were given in)
    end: float

    def to_dict(self) -> dict:
        return asdict(self)


def simulate(
    attention: float,
    dispatch: float,
    experts: float,
    combine: float,
    micro_batches: int = 1,
    shared: float = 0.0,
) -> list[Interval]:
    """Intervals of one layer split into `micro_batches` equal parts (durations for the whole
    batch; each part takes 1 / micro_batches of each). A shared expert (`shared`) needs no
    transfer: it runs on the compute stream while that micro-batch's dispatch is in flight.

    Stream order is the one overlap schedules use: compute runs every attention first, then
    shared experts, then experts; comm runs every dispatch, then every combine.
    """
    if micro_batches < 1:
        raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
    m = micro_batches
    cost = {"attention": attention / m, "dispatch": dispatch / m, "experts": experts / m,
            "combine": combine / m, "shared": shared / m}  # fmt: skip
    done: dict[tuple[str, int], float] = {}
    free = {COMPUTE: 0.0, COMM: 0.0}
    out: list[Interval] = []

    def run(op: str, stream: str, i: int, after: str | None) -> None:
        start = max(free[stream], done.get((after, i), 0.0) if after else 0.0)
        end = start + cost[op]
        done[op, i] = free[stream] = end
        if cost[op] > 0:
            out.append(Interval(stream, op, i, start, end))

    for i in range(m):
        run("attention", COMPUTE, i, None)
        run("dispatch", COMM, i, "attention")
    for i in range(m):
        if shared:
            run("shared", COMPUTE, i, "attention")
    for i in range(m):
        # experts of i wait for its dispatch; combine of i waits for its experts
        run("experts", COMPUTE, i, "dispatch")
        run("combine", COMM, i, "experts")
    return out


def makespan(intervals: list[Interval]) -> float:
    return max((iv.end for iv in intervals), default=0.0)


def stream_busy(intervals: list[Interval], stream: str) -> float:
    """Seconds the stream works; makespan minus this is how long it waits."""
    return sum(iv.end - iv.start for iv in intervals if iv.stream == stream)
