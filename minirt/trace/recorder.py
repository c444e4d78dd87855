"""The Recorder collects engine events; `load_trace` reads them back, validated.

A trace is one JSON object: {"format": "minirt-trace", "version": 1, "meta": {}, "events": []}.
The engine is handed a Recorder (no global state) and calls `record(event)` once per step or
request; the dashboard and the notebooks call `load_trace(path)` and get a `Trace`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from minirt.trace.consistency import inconsistency
from minirt.trace.schema import (
    ANY_EVENT,
    EVENT_SCHEMAS,
    FORMAT,
    MAX_DEPTH,
    MAX_DIGITS,
    MAX_TRACE_BYTES,
    META,
    VERSION,
)

_VALIDATORS = {kind: Draft202012Validator(s) for kind, s in EVENT_SCHEMAS.items()}
_ANY_VALIDATOR = Draft202012Validator(ANY_EVENT)
_META_VALIDATOR = Draft202012Validator(META)


class TraceError(ValueError):
    """A trace file is malformed or from an unsupported version; the message says how to fix it."""


class Event(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class Recorder:
    """Collects events in memory as plain dicts; `save()` writes them as one trace file."""

    def __init__(self, meta: dict[str, Any] | None = None) -> None:
        self.meta = dict(meta or {})
        try:
            json.dumps(self.meta, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TraceError(f"trace meta is not JSON-serialisable ({e}); pass plain values") from e
        self.events: list[dict[str, Any]] = []

    def record(self, event: Event | dict[str, Any]) -> None:
        """Store `event.to_dict()`; `load_trace` validates later, so the engine loop stays fast."""
        d = event if isinstance(event, dict) else event.to_dict()
        if not isinstance(d.get("type"), str):
            raise TraceError(f"an event needs a string 'type' field, got {d!r:.80}")
        self.events.append(d)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "meta": self.meta, "events": self.events}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trace as JSON, one event per line (readable, and diffs stay small)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = {"format": FORMAT, "version": VERSION, "meta": self.meta}
        lines = [json.dumps(e, allow_nan=False) for e in self.events]
        head_text = json.dumps(head, allow_nan=False)[:-1]  # drop "}" to append the events
        path.write_text(head_text + ', "events": [\n' + ",\n".join(lines) + "\n]}\n")
        return path


@dataclass
class Trace:
    """A validated trace. `events` are plain dicts; step `block_tables` have int keys again."""

    meta: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    version: int = VERSION

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]

    def steps(self) -> list[dict[str, Any]]:
        return self.of_type("step")

    def requests(self) -> list[dict[str, Any]]:
        return self.of_type("request")

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "meta": self.meta, "events": self.events}


def load_trace(source: str | os.PathLike[str] | IO[str] | IO[bytes] | dict[str, Any]) -> Trace:
    """Read and validate a trace from a path, an open file, or an already-parsed dict."""
    data = _parse(source)
    _check_envelope(data)
    events = data["events"]
    for i, event in enumerate(events):
        _check_event(i, event)
    problem = inconsistency(data["meta"], events)
    if problem:
        raise TraceError(problem)
    for event in events:
        if event["type"] == "step":
            event["block_tables"] = {int(k): v for k, v in event["block_tables"].items()}
    return Trace(meta=data["meta"], events=events, version=data["version"])


def _reject_constant(name: str) -> None:
    raise TraceError(f"trace contains {name}, which is not valid JSON; record finite numbers only")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise TraceError(
            f"trace holds a {len(text.lstrip('-')):,}-digit number; a trace's integers are counts, "
            f"ids and sizes of at most {MAX_DIGITS} digits"
        )
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise TraceError(f"trace holds {text[:40]}, beyond a finite float; record finite numbers")
    return value


def _parse(source: Any) -> Any:
    """Return the trace as JSON values (a dict given in memory is round-tripped to match a file)."""
    name, text = _read(source)
    hooks = {"parse_constant": _reject_constant, "parse_int": _bounded_int}
    try:
        data = json.loads(text, parse_float=_finite_float, **hooks)
    except TraceError as e:
        raise TraceError(f"{name}: {e}") from None
    except RecursionError:
        raise TraceError(f"{name} nests too deeply to parse; is it a minirt trace?") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise TraceError(
            f"{name} is not JSON ({e}); a trace is written by minirt.trace.Recorder.save"
        ) from None
    if _depth(data) > MAX_DEPTH:
        raise TraceError(
            f"{name} nests more than {MAX_DEPTH} levels deep; a minirt trace nests about 7 "
            "(is it a minirt trace?)"
        )
    return data


def _read(source: Any) -> tuple[str, str | bytes]:
    """(a name for messages, the JSON text) of a path, an open file or a dict."""
    if isinstance(source, dict):
        try:
            return "trace dict", json.dumps(source, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise TraceError(f"trace dict is not JSON-serialisable ({e})") from None
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no trace file at {path}; check the path given to load_trace")
        _check_size(str(path), path.stat().st_size)
        return str(path), path.read_bytes()
    if hasattr(source, "read"):
        name = getattr(source, "name", "<file>")
        text = source.read(MAX_TRACE_BYTES + 1)  # never more than one byte past the limit
        _check_size(name, len(text))
        return name, text
    raise TypeError(f"load_trace takes a path, a file or a dict, not {type(source).__name__}")


def _check_size(name: str, size: int) -> None:
    if size > MAX_TRACE_BYTES:
        raise TraceError(
            f"{name} is over {MAX_TRACE_BYTES // 2**20} MiB; a trace that large cannot be drawn. "
            "Record fewer steps (a shorter run, or fewer prompts) and load that"
        )


def _depth(data: Any) -> int:
    """How deeply lists and dicts nest in `data`, walked without recursion (1 for a scalar)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict | list):
            stack.extend((v, depth + 1) for v in children if isinstance(v, dict | list))
    return deepest


def _check_envelope(data: Any) -> None:
    if not isinstance(data, dict):
        raise TraceError(
            f"a trace is a JSON object with 'format', 'version', 'meta' and 'events', "
            f"but got a {type(data).__name__}"
        )
    fmt = data.get("format")
    if fmt != FORMAT:
        what = "has no 'format' field" if fmt is None else f"has format {fmt!r}"
        raise TraceError(f"this file {what}; expected {FORMAT!r} (is it a minirt trace?)")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TraceError(f"trace 'version' must be an integer, got {version!r}")
    if version > VERSION:
        raise TraceError(
            f"trace version {version} is newer than this minirt reads (version {VERSION}); "
            "upgrade minirt to read it"
        )
    if version < VERSION:
        raise TraceError(
            f"trace version {version} is older than this minirt reads (version {VERSION}); "
            "re-record the trace with this minirt"
        )
    if not isinstance(data.get("meta"), dict):
        raise TraceError("trace 'meta' must be a JSON object (a dict of run settings)")
    error = best_match(_META_VALIDATOR.iter_errors(data["meta"]))
    if error is not None:
        where = "".join(f"[{p!r}]" for p in error.absolute_path)
        raise TraceError(
            f"trace meta{where} is malformed: {error.message}; re-record the trace or fix it"
        )
    if not isinstance(data.get("events"), list):
        got = type(data.get("events")).__name__ if "events" in data else "nothing"
        raise TraceError(f"trace 'events' must be a list of event objects, got {got}")


def _check_event(index: int, event: Any) -> None:
    kind = event.get("type") if isinstance(event, dict) else None
    validator = _VALIDATORS.get(kind, _ANY_VALIDATOR) if isinstance(kind, str) else _ANY_VALIDATOR
    error = best_match(validator.iter_errors(event))
    if error is None:
        return
    where = "".join(f"[{p!r}]" for p in error.absolute_path)
    label = f"event {index}" + (f" (type {kind!r})" if isinstance(kind, str) else "")
    raise TraceError(
        f"{label} is malformed{' at ' + where if where else ''}: {error.message}. "
        "Events come from minirt.trace event dataclasses; re-record the trace or fix that field."
    )
