"""What a schema can't say about a trace: its fields agree with each other.

Every block id a step holds is below the pool size (`meta.num_blocks`), and blocks in use plus
free blocks fit in the pool. A page indexes its pool by block id, so `load_trace` refuses a trace
that breaks these, naming the event and the field, instead of a page failing half-way.
"""

from __future__ import annotations

from typing import Any

FIX = "re-record the trace, or correct the field"


def inconsistency(meta: dict[str, Any], events: list[dict[str, Any]]) -> str | None:
    """What the first step event gets wrong about `meta.num_blocks`, or None if nothing."""
    num_blocks = meta.get("num_blocks")
    if num_blocks is None:  # an older or hand-made trace: the schema's bounds still hold
        return None
    for index, event in enumerate(events):
        if event["type"] == "step":
            problem = _step_problem(event, num_blocks)
            if problem:
                return f"event {index} (step {event['step']}): {problem}; {FIX}"
    return None


def _step_problem(event: dict[str, Any], num_blocks: int) -> str | None:
    pool = f"meta.num_blocks is {num_blocks:,} (block ids 0..{num_blocks - 1:,})"
    used: set[int] = set()
    for seq_id, table in event["block_tables"].items():
        used.update(table)
        top = max(table, default=-1)
        if top >= num_blocks:
            return f"block_tables[{seq_id}] holds block {top:,} but {pool}"
    for spec in event.get("spec", []):
        for name in ("table_before", "freed_blocks"):
            top = max(spec[name], default=-1)
            if top >= num_blocks:
                return f"spec {name} of seq {spec['seq_id']} holds block {top:,} but {pool}"
    free = event["num_free_blocks"]
    if len(used) + free > num_blocks:
        return (
            f"{len(used):,} blocks in use + num_free_blocks {free:,} is more than "
            f"meta.num_blocks ({num_blocks:,})"
        )
    if event["num_cached_blocks"] > num_blocks:
        cached = event["num_cached_blocks"]
        return f"num_cached_blocks {cached:,} is more than meta.num_blocks ({num_blocks:,})"
    return None
