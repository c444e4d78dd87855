"""JSON schemas of a trace file: the envelope, and one schema per event type.

`load_trace` checks a file against these before anyone reads it, so a dashboard page never meets
a half-written event. Event types not listed here are kept as they are (they need only "type").
Fields may be added to an event (readers ignore them); removing or retyping one bumps VERSION.
"""

from __future__ import annotations

from typing import Any

FORMAT = "minirt-trace"
VERSION = 1

_INT = {"type": "integer", "minimum": 0}
_NUM = {"type": "number"}
_INT_LIST = {"type": "array", "items": _INT}
_OPT_NUM = {"type": ["number", "null"]}


def _event(properties: dict[str, Any]) -> dict[str, Any]:
    """An object schema where every listed property is required (extra properties are allowed)."""
    return {"type": "object", "properties": properties, "required": sorted(properties)}


SCHEDULED_SEQ = _event(
    {
        "seq_id": _INT,
        "num_new_tokens": _INT,
        "num_computed_tokens": _INT,
        "is_prefill": {"type": "boolean"},
    }
)

EVENT_SCHEMAS: dict[str, dict[str, Any]] = {
    "step": _event(
        {
            "type": {"const": "step"},
            "step": _INT,
            "time_s": _NUM,
            "scheduled": {"type": "array", "items": SCHEDULED_SEQ},
            "num_prefill_tokens": _INT,
            "num_decode_tokens": _INT,
            "num_running": _INT,
            "num_waiting": _INT,
            "preempted": _INT_LIST,
            "finished": _INT_LIST,
            # JSON object keys are strings: seq ids are written as "3"; load_trace makes them ints.
            "block_tables": {
                "type": "object",
                "propertyNames": {"pattern": "^[0-9]+$"},
                "additionalProperties": _INT_LIST,
            },
            "num_free_blocks": _INT,
            "num_cached_blocks": _INT,
            "prefix_hit_tokens": _INT,
            "schedule_ms": _NUM,
            "forward_ms": _NUM,
        }
    ),
    "request": _event(
        {
            "type": {"const": "request"},
            "seq_id": _INT,
            "prompt_len": _INT,
            "arrival_s": _NUM,
            "first_token_s": _OPT_NUM,
            "finish_s": _OPT_NUM,
            "num_output_tokens": _INT,
            "finish_reason": {"type": ["string", "null"]},
        }
    ),
}

# Any event, known or not, must at least say what it is.
ANY_EVENT = {"type": "object", "properties": {"type": {"type": "string"}}, "required": ["type"]}
