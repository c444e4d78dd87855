"""Read an engine trace as a learner would: step tables, who ran with how many tokens, slots.

Works on the plain dicts of `llm.recorder.events` or a loaded `Trace`'s events, so a notebook can
print what the scheduler decided without re-running anything. Notebooks 00 and 02 use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from minirt.tools.text import format_table

TIMING_FIELDS = ("time_s", "schedule_ms", "forward_ms", "cpu_ms", "device_ms")


def steps_of(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The StepEvent dicts of a trace, in order."""
    return [dict(e) for e in events if e["type"] == "step"]


def without_timings(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event without its wall-clock fields (they differ on every run and machine)."""
    return {k: v for k, v in event.items() if k not in TIMING_FIELDS}


def describe_batch(step: Mapping[str, Any]) -> str:
    """A step's batch in one line: `3:P0+128` = seq 3 prefills 128 tokens from position 0,
    `5:D` = seq 5 decodes one token."""
    parts = []
    for s in step["scheduled"]:
        if s["is_prefill"]:
            parts.append(f"{s['seq_id']}:P{s['num_computed_tokens']}+{s['num_new_tokens']}")
        else:
            parts.append(f"{s['seq_id']}:D")
    return " ".join(parts)


def step_rows(steps: Iterable[Mapping[str, Any]], batch_width: int = 48) -> list[dict[str, Any]]:
    """One row per step: tokens, queue lengths, preemptions, finishes, free blocks, the batch."""
    rows = []
    for e in steps:
        batch = describe_batch(e)
        rows.append(
            {
                "step": e["step"],
                "prefill": e["num_prefill_tokens"],
                "decode": e["num_decode_tokens"],
                "running": e["num_running"],
                "waiting": e["num_waiting"],
                "preempted": ",".join(map(str, e["preempted"])) or "-",
                "finished": ",".join(map(str, e["finished"])) or "-",
                "free_blocks": e["num_free_blocks"],
                "batch": batch if len(batch) <= batch_width else batch[: batch_width - 1] + "…",
            }
        )
    return rows


def step_table(steps: Iterable[Mapping[str, Any]], batch_width: int = 48) -> str:
    """`step_rows` as an aligned text table (no timings: the output is the same on every run)."""
    return format_table(step_rows(steps, batch_width))


def slot_mapping(step: Mapping[str, Any], block_size: int) -> list[dict[str, int]]:
    """Where each new token of a step is stored: slot = block_table[pos // bs] * bs + pos % bs.

    The same arithmetic as the ModelRunner, redone from the block tables the trace recorded.
    """
    tables = {int(k): v for k, v in step["block_tables"].items()}
    rows = []
    for s in step["scheduled"]:
        table = tables.get(s["seq_id"])
        if table is None:  # finished this step: its blocks are already back on the free list
            continue
        start = s["num_computed_tokens"]
        for pos in range(start, start + s["num_new_tokens"]):
            block = table[pos // block_size]
            rows.append(
                {
                    "seq_id": s["seq_id"],
                    "position": pos,
                    "block": block,
                    "offset": pos % block_size,
                    "slot": block * block_size + pos % block_size,
                }
            )
    return rows


def decode_gaps_ms(steps: Iterable[Mapping[str, Any]], seq_id: int) -> list[float]:
    """Milliseconds between consecutive decode steps of `seq_id`: the inter-token latency it felt
    (a long prefill sharing those steps shows up here as a spike)."""
    times = [
        e["time_s"]
        for e in steps
        if any(s["seq_id"] == seq_id and not s["is_prefill"] for s in e["scheduled"])
    ]
    return [(b - a) * 1e3 for a, b in zip(times, times[1:], strict=False)]


def table_history(steps: Iterable[Mapping[str, Any]], seq_id: int) -> list[dict[str, Any]]:
    """The steps at which `seq_id`'s block table changed, and what it became ([] = no blocks)."""
    rows, last = [], None
    for e in steps:
        table = {int(k): v for k, v in e["block_tables"].items()}.get(seq_id, [])
        if table != last and (last is not None or table):
            rows.append({"step": e["step"], "blocks": len(table), "block_table": list(table)})
        last = table
    return rows
