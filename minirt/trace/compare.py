"""Your run beside minirt's: the same requests through the engine with your part and with its own.

`record_pair` runs the embedded engine twice and returns both traces; `first_divergence` names the
first step where the engine decided differently, `step_summary` lays both runs out step by step.
Only what the engine decided is compared (never times), so two runs of one setup never differ.
Runs the engine, so it sits above it (tests/test_layering.py); the dashboard's page 12 draws it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from minirt.engine.llm import LLM
from minirt.sampling_params import SamplingParams
from minirt.trace.recorder import Trace, load_trace

PARTS = (
    "prefix_cache",
    "schedule_policy",
    "scheduler",
    "kernel_backend",
    "sampler",
    "spec_verifier",
)
# What one step decided, in the order a difference is looked for: who was let in comes first,
# since the blocks, hits and free list of that step follow from it.
FIELDS = {
    "admitted": "admitted sequences",
    "new_tokens": "new tokens per sequence",
    "preempted": "preempted sequences",
    "block_tables": "block tables",
    "prefix_hit_tokens": "prefix-cache hit tokens",
    "num_free_blocks": "free blocks",
    "finished": "finished sequences",
}


@dataclass
class Divergence:
    """The first step where two runs differ: which field, and its value in each run."""

    step: int
    field: str  # a key of FIELDS, or "steps" when one run has ended and the other has not
    yours: Any
    minirt: Any

    def describe(self) -> str:
        what = FIELDS.get(self.field, "number of steps")
        if self.field == "steps":
            return f"after step {self.step - 1}, {self.yours} (yours) vs {self.minirt} (minirt)"
        return f"step {self.step}, {what}: yours {self.yours}, minirt {self.minirt}"

    __str__ = describe  # print(first_divergence(a, b)) reads as a sentence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_pair(
    prompts: list[str] | list[list[int]],
    params: SamplingParams | list[SamplingParams] | None,
    part: dict[str, Any],
    name: str | None = None,
    folder: str | Path = "runs",
    **engine_kwargs: Any,
) -> tuple[Trace, Trace]:
    """(yours, minirt): `LLM(**engine_kwargs, **part)` and `LLM(**engine_kwargs)`, each a fresh
    traced engine generating `prompts`. Give `name` to also save `<folder>/<name>-yours.json`
    and `<name>-minirt.json` (the dashboard lists that folder). minirt's side uses what
    `engine_kwargs` names, e.g. `schedule_policy="lpm"`, or the engine's default. Both run on
    the CPU unless `engine_kwargs` say `device=`."""
    unknown = sorted(set(part) - set(PARTS))
    if unknown or not part:
        raise ValueError(
            f"part must name one or more of {', '.join(PARTS)} (got {sorted(part)}); "
            "pass other engine settings as keyword arguments: both runs get them"
        )
    kwargs = {"device": "cpu", **engine_kwargs, "trace": True}
    traces = {}
    for side, extra in (("yours", part), ("minirt", {})):
        llm = LLM(**{**kwargs, **extra})
        llm.generate(prompts, params, use_tqdm=False)
        if name is not None:
            llm.recorder.save(Path(folder) / f"{name}-{side}.json")
        traces[side] = load_trace(llm.recorder.to_dict())
    return traces["yours"], traces["minirt"]


def decisions(trace: Trace) -> list[dict[str, Any]]:
    """Per step, what the engine decided (the FIELDS), as plain values that compare with ==."""
    waiting: set[int] = set()  # sequences that would be admitted (again) when next scheduled
    seen: set[int] = set()
    out = []
    for e in trace.steps():
        swapped_in = set(e.get("swapped_in", []))
        admitted = []
        for s in e["scheduled"]:
            sid = s["seq_id"]
            if (sid not in seen or sid in waiting) and sid not in swapped_in:
                admitted.append(sid)
            seen.add(sid)
            waiting.discard(sid)
        # recompute preemption sends a sequence back to the queue; swapped out, it waits on host
        waiting |= set(e["preempted"]) - set(e.get("swapped_out", []))
        # the tokens an admission found cached: the scheduler starts it there (for hit_rate)
        cached = {s["seq_id"]: s["num_computed_tokens"] for s in e["scheduled"]}
        out.append(
            {
                "step": e["step"],
                "admitted": admitted,
                "new_tokens": {s["seq_id"]: s["num_new_tokens"] for s in e["scheduled"]},
                "preempted": e["preempted"],
                "block_tables": e["block_tables"],
                "prefix_hit_tokens": e["prefix_hit_tokens"],
                "num_free_blocks": e["num_free_blocks"],
                "finished": e["finished"],
                "cached": {sid: cached[sid] for sid in admitted},
            }
        )
    return out


def first_divergence(a: Trace, b: Trace) -> Divergence | None:
    """The first step where `a` (yours) and `b` (minirt) decided differently, or None."""
    da, db = decisions(a), decisions(b)
    for x, y in zip(da, db, strict=False):
        for f in FIELDS:
            if x[f] != y[f]:
                return Divergence(x["step"], f, x[f], y[f])
    if len(da) != len(db):
        step = min(len(da), len(db))
        return Divergence(step, "steps", f"{len(da)} steps", f"{len(db)} steps")
    return None


def hit_rate(trace: Trace) -> float:
    """Prompt tokens found in the prefix cache / prompt tokens, as `llm.last_stats` counts them:
    a sequence preempted and admitted again counts the hits of its last admission."""
    cached: dict[int, int] = {}
    for d in decisions(trace):
        cached.update(d["cached"])
    prompt = {r["seq_id"]: r["prompt_len"] for r in trace.requests()}
    hits = sum(min(cached.get(s, 0), n) for s, n in prompt.items())
    return hits / max(1, sum(prompt.values()))


def step_summary(a: Trace, b: Trace) -> list[dict[str, Any]]:
    """One row per step of the longer run: what each side ran, its hits and free blocks, and
    which fields differ ("" where the step is the same; a run that has ended shows None)."""
    da, db = decisions(a), decisions(b)
    rows = []
    for i in range(max(len(da), len(db))):
        x = da[i] if i < len(da) else None
        y = db[i] if i < len(db) else None
        differs = [FIELDS[f] for f in FIELDS if x and y and x[f] != y[f]]
        row = {"step": i}
        for side, d in (("yours", x), ("minirt", y)):
            row[f"{side} ran"] = _ran(d) if d else "(ended)"
            row[f"{side} hits"] = d["prefix_hit_tokens"] if d else None
            row[f"{side} free"] = d["num_free_blocks"] if d else None
        row["differs"] = ", ".join(differs) if x and y else "one run has ended"
        rows.append(row)
    return rows


def _ran(d: dict[str, Any]) -> str:
    """The step's batch as "seq 0 +11 (new), seq 1 +1": tokens computed, new admissions marked."""
    return ", ".join(
        f"seq {s} +{n}" + (" (new)" if s in d["admitted"] else "")
        for s, n in d["new_tokens"].items()
    )
