"""JSON schemas of a trace file: the envelope, and one schema per event type.

`load_trace` checks a file against these before anyone reads it, so a dashboard page never meets
a half-written event. Event types not listed here are kept as they are (they need only "type").
Fields may be added to an event (readers ignore them); removing or retyping one bumps VERSION.
"""

from __future__ import annotations

from typing import Any

FORMAT = "minirt-trace"
VERSION = 1

# What a trace may claim: generous for any real run, finite so a page can afford to draw it.
MAX_TRACE_BYTES = 256 * 2**20  # a long GPU run with every step recorded is tens of MiB
MAX_DEPTH = 32  # a real trace nests 7 deep (envelope > events > step > cache > nodes > node)
MAX_DIGITS = 20  # an int of a trace is a count, an id, bytes or a seed: below 2**64
MAX_NUM_BLOCKS = 2**24  # 16.7M: the embedded model's pool on a 141 GB GPU has ~2M blocks
MAX_BLOCK_SIZE = 2**16  # tokens a block: pages draw a block slot by slot
MAX_INT = 2**53 - 1  # the largest int a browser (the dashboard's charts) holds exactly

_INT = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
_NUM = {"type": "number"}
_INT_LIST = {"type": "array", "items": _INT}
_OPT_NUM = {"type": ["number", "null"]}
_BLOCK_IDS = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": MAX_NUM_BLOCKS - 1},
}
_NUM_BLOCKS = {"type": "integer", "minimum": 0, "maximum": MAX_NUM_BLOCKS}


def _event(properties: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object schema: every listed property is required, `optional` ones are checked when
    present (fields added after version 1 are optional, so older traces still load)."""
    return {
        "type": "object",
        "properties": {**properties, **(optional or {})},
        "required": sorted(properties),
    }


SCHEDULED_SEQ = _event(
    {
        "seq_id": _INT,
        "num_new_tokens": _INT,
        "num_computed_tokens": _INT,
        "is_prefill": {"type": "boolean"},
    }
)

SPEC_STEP = _event(
    {
        "seq_id": _INT,
        "proposed": _INT_LIST,
        "num_accepted": _INT,
        "emitted": _INT_LIST,
        "table_before": _BLOCK_IDS,
        "freed_blocks": _BLOCK_IDS,
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
                "additionalProperties": _BLOCK_IDS,
            },
            "num_free_blocks": _NUM_BLOCKS,
            "num_cached_blocks": _NUM_BLOCKS,
            "prefix_hit_tokens": _INT,
            "schedule_ms": _NUM,
            "forward_ms": _NUM,
        },
        optional={  # preemption_mode="swap": who went to host memory this step, who came back
            "swapped_out": _INT_LIST,
            "swapped_in": _INT_LIST,
            "num_swapped": _INT,
            "swap_blocks": _INT,
            # speculative decoding: what each speculating sequence proposed, kept and freed
            "spec": {"type": "array", "items": SPEC_STEP},
            # the step's host time (schedule, inputs, reading tokens) and device time; with
            # overlap_schedule the two run at once (notebook 11)
            "cpu_ms": _NUM,
            "device_ms": _NUM,
            "overlap": {"type": "boolean"},
            "cache": {"type": "object"},  # the prefix cache after the step (to_dict())
        },
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
    # One thing a stream, a copy engine or the host thread did, from start to end: the timeline
    # that minirt.transfer records with CUDA events and minirt.tools.streams simulates.
    "interval": _event(
        {
            "type": {"const": "interval"},
            "lane": {"type": "string"},  # a stream ("compute", "copy"), or "cpu"
            "name": {"type": "string"},
            "kind": {"enum": ["h2d", "d2h", "d2d", "kernel", "host", "blocked"]},
            "start_ms": _NUM,
            "end_ms": _NUM,
        },
        optional={"nbytes": _INT, "run": {"type": "string"}},
    ),
}

# The meta keys a page reads; others are free-form run settings.
META = {
    "type": "object",
    "properties": {
        "num_blocks": {**_NUM_BLOCKS, "minimum": 1},
        "block_size": {"type": "integer", "minimum": 1, "maximum": MAX_BLOCK_SIZE},
    },
}

# Any event, known or not, must at least say what it is.
ANY_EVENT = {"type": "object", "properties": {"type": {"type": "string"}}, "required": ["type"]}
