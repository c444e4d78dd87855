"""Structured traces of engine runs: what was scheduled, where KV lives, how long each step took.

The engine writes events to a `Recorder`; `load_trace` reads a saved trace back and validates it.
The block-table and scheduler pages of the dashboard, and the notebooks, draw from these files.
"""

from minirt.trace.events import IntervalEvent, RequestEvent, ScheduledSeq, StepEvent
from minirt.trace.recorder import Recorder, Trace, TraceError, load_trace
from minirt.trace.schema import FORMAT, VERSION

__all__ = [
    "FORMAT",
    "IntervalEvent",
    "VERSION",
    "Recorder",
    "RequestEvent",
    "ScheduledSeq",
    "StepEvent",
    "Trace",
    "TraceError",
    "load_trace",
]
