"""An engine run as plain data, and the learner's run compared with minirt's, step by step.

A lab whose part plugs into the engine grades it the same way every time: the same rounds of
requests run on the learner's part and on minirt's own. In the grader's worker `rounds_record`
keeps what the engine decided at each step and what each request got, as plain data (the worker
sends it to the parent); in the parent `compare_rounds` names the first difference: the round,
the step and what differs there (who was scheduled with how many tokens, a block table, the free
or cached blocks), then the number of steps, then each request's cached and generated tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minirt.grading.core import Mismatch, Refused

# What one step decided, in the order a difference is looked for: what was scheduled comes
# first, since the blocks of that step follow from it.
STEP_FIELDS = {
    "scheduled": "the engine scheduled (sequence, new tokens)",
    "preempted": "preempted sequences",
    "block_tables": "block tables",
    "num_free_blocks": "free blocks",
    "num_cached_blocks": "cached blocks",
}


def step_record(event: dict[str, Any]) -> dict[str, Any]:
    """One step event of the engine's trace (`LLM(trace=True)`), reduced to its decisions."""
    return {
        "step": event["step"],
        "scheduled": [[s["seq_id"], s["num_new_tokens"]] for s in event["scheduled"]],
        "preempted": list(event["preempted"]),
        "block_tables": {int(k): list(v) for k, v in event["block_tables"].items()},
        "num_free_blocks": event["num_free_blocks"],
        "num_cached_blocks": event["num_cached_blocks"],
    }


def round_record(llm, outputs) -> dict[str, Any]:
    """The last `generate` call of a traced engine (each call records a trace of its own): its
    steps and what each request got."""
    steps = [e for e in llm.recorder.events if e["type"] == "step"]
    return {
        "steps": [step_record(e) for e in steps],
        "outputs": [
            {"token_ids": list(o.token_ids), "num_cached_tokens": o.num_cached_tokens}
            for o in outputs
        ],
    }


def rounds_record(llm, rounds, params) -> list[dict[str, Any]]:
    """`llm.generate` on each round of prompts in turn (a traced engine), each round recorded."""
    out = []
    for prompts in rounds:
        outputs = llm.generate(prompts, params, use_tqdm=False)
        out.append(round_record(llm, outputs))
    return out


def engine_on(cache, case: dict, forbidden=None, what: str = "your cache"):
    """The embedded engine on the CPU, traced, on the prefix cache `cache` (a class, or a
    registry name) in a pool of the case's `num_blocks` blocks of `block_size`, 32 tokens a step,
    first come first served. With `forbidden`, the books the engine built are checked first: books
    that are, or hold, minirt's own raise `Refused`."""
    from minirt import LLM  # the engine, only for the tasks that run it
    from minirt.grading.guard import check_instance

    llm = LLM(
        device="cpu",
        block_size=case["block_size"],
        num_kv_blocks=case["num_blocks"],
        max_num_batched_tokens=32,
        prefix_cache=cache,
        schedule_policy="fcfs",
        trace=True,
    )
    if forbidden is not None:
        refusals = check_instance(what, llm.block_manager, forbidden)
        if refusals:
            raise Refused("; ".join(map(str, refusals[:3])))
    return llm


def first_step_difference(got: dict, want: dict, fields=STEP_FIELDS) -> tuple[str, str] | None:
    """(field, '<what>: yours …, minirt …') for the first field where two steps differ, or None."""
    for key, what in fields.items():
        if key == "block_tables":
            for seq, table in want[key].items():
                if got[key].get(seq) != table:
                    mine = got[key].get(seq)
                    return key, f"sequence {seq}'s block table: yours {mine}, minirt's {table}"
            extra = sorted(set(got[key]) - set(want[key]))
            if extra:
                return key, f"sequences {extra} hold blocks; on minirt's they hold none"
        elif got.get(key) != want.get(key):
            return key, f"{what}: yours {got.get(key)}, minirt {want.get(key)}"
    return None


def compare_rounds(
    got: list[dict],
    want: list[dict],
    case: str,
    size: int | None,
    hints: dict[str, str | Callable[[dict], str]] | None = None,
    fields: dict[str, str] = STEP_FIELDS,
) -> None:
    """Raise `Mismatch` at the first difference between two recorded runs, naming the round, the
    step and what differs; `hints[field]` is added to a difference in that field (`"cached"` and
    `"tokens"`: a request's cached or generated tokens); a callable hint is given the learner's
    step."""
    hints = hints or {}

    def fail(at: str, message: str, field: str = "", step: dict | None = None) -> None:
        hint = hints.get(field, "")
        hint = hint(step) if callable(hint) else hint
        raise Mismatch(f"{case}: {at}{message}{f' ({hint})' if hint else ''}", size)

    for r, (g, w) in enumerate(zip(got, want, strict=True)):
        at = f"round {r + 1}, " if len(want) > 1 else ""
        for gs, ws in zip(g["steps"], w["steps"], strict=False):
            diff = first_step_difference(gs, ws, fields)
            if diff:
                fail(f"{at}step {ws['step']}: ", diff[1], diff[0], gs)
        if len(g["steps"]) != len(w["steps"]):
            fail(at, f"your run took {len(g['steps'])} steps; minirt's {len(w['steps'])}")
        for k, (a, b) in enumerate(zip(g["outputs"], w["outputs"], strict=True)):
            req = f"{at}request {k + 1}: "
            if a["num_cached_tokens"] != b["num_cached_tokens"]:
                fail(
                    req,
                    f"{a['num_cached_tokens']} prompt tokens came from the cache; on minirt's "
                    f"{b['num_cached_tokens']}",
                    "cached",
                )
            if a["token_ids"] != b["token_ids"]:
                pairs = zip(a["token_ids"], b["token_ids"], strict=False)
                j = next((j for j, (x, y) in enumerate(pairs) if x != y), None)
                if j is None:
                    message = (
                        f"{len(a['token_ids'])} tokens generated; minirt {len(b['token_ids'])}"
                    )
                else:
                    message = f"generated token {j + 1} is {a['token_ids'][j]}, minirt's "
                    message += f"{b['token_ids'][j]}"
                fail(req, message, "tokens")


def books_after(books) -> dict[str, Any]:
    """What the block books hold once a run is over, as plain data: the sequences that still
    have tables, the blocks with holders, what `check_invariants` says, and (the prefix cache
    evicted) how many blocks are not free."""
    try:
        books.check_invariants()
        invariants = ""
    except AssertionError as e:
        invariants = str(e) or "an invariant does not hold"
    tables = sorted(books.tables)
    held = [b for b, n in enumerate(getattr(books, "ref_count", [])) if n]
    books.evict()
    return {
        "tables": tables,
        "held": held,
        "invariants": invariants,
        "not_free": books.num_blocks - books.num_free_blocks,
        "num_blocks": books.num_blocks,
    }


def check_books_after(
    end: dict,
    case: str,
    size: int | None,
    leak: str = "a block with no holder must go back to the free list",
) -> None:
    """Raise `Mismatch` if the run left anything held: no sequence keeps a table, no block a
    holder, the invariants hold, and with the cache evicted every block is free (`leak`: the
    lab's hint where one is not)."""
    if end["tables"]:
        raise Mismatch(f"{case}: after the run sequences {end['tables']} still hold blocks", size)
    if end["held"]:
        raise Mismatch(f"{case}: after the run blocks {end['held']} still have holders", size)
    if end["invariants"]:
        raise Mismatch(f"{case}: after the run, check_invariants says: {end['invariants']}", size)
    if end["not_free"]:
        raise Mismatch(
            f"{case}: with every request done and the cache evicted, {end['not_free']} of "
            f"{end['num_blocks']} blocks are not free (leaked: {leak})",
            size,
        )
