"""Lab 3, task 4: the learner's verifier and rollback inside the speculative engine.

The notebook's `my_verifier` (tasks 1 and 2, one sequence at a time) runs as
`LLM(spec_verifier=my_verifier)` and its `MyBlocks` (minirt's block books, with task 3 deciding
which blocks a rollback keeps and frees) as `LLM(prefix_cache=MyBlocks)`, on fresh prompts
(greedy, sampled, or both in one batch, some in a pool small enough to preempt). The grader's
worker runs the learner's engine only (`play`) and records every call of the verifier (its
drafts, logits, distributions and the request's generator state, and the learner's verdict),
the steps, the tokens and the books after the run. The parent checks every verdict against
minirt's verifier on the same logits and the same random numbers and every rollback (`precheck`:
no engine of minirt's runs for a case that fails there), then compares the run with minirt's
speculative engine step by step (`compare`: proposals, verdicts, the rollback's tables and
freed blocks, admissions, free blocks), greedy outputs with the plain engine's (no draft at all),
and the books after the run (no leaked block).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from pathlib import Path

import torch

from minirt.grading.core import Mismatch, _where
from minirt.grading.engine_runs import (
    books_after,
    check_books_after,
    first_step_difference,
    step_record,
)
from minirt.sampler import filter_logits
from minirt.sampling_params import SamplingParams
from minirt.spec.rejection import verify

BYTES_PER_TOKEN = 12288  # the embedded target's KV per token (8,192) and the draft's (4,096)
BOUNDARY = 1e-5  # |u q - p| / p below this: float32 rounding may decide either way
# What a step decided besides the verdicts, compared with engine_runs' step comparison.
STEP_FIELDS = {
    "scheduled": "the engine scheduled (sequence, new tokens)",
    "block_tables": "block tables",
    "num_free_blocks": "free blocks",
}
SPEC_FIELDS = ("proposed", "num_accepted", "emitted", "table_before", "freed_blocks")


def _text() -> str:
    return Path(json.__file__).read_text()  # Python source, as the embedded pair was trained on


@functools.cache
def _tokenizer():
    from minirt.model.loader import resolve_model_path
    from minirt.model.tokenizer import load_tokenizer

    return load_tokenizer(resolve_model_path("target"))


def _digest(generator: torch.Generator) -> str:
    return hashlib.sha256(generator.get_state().numpy().tobytes()).hexdigest()


class _Recorder:
    """The verifier the learner's engine runs: the learner's own, each call kept with what it was
    given (the request's generator state before it) and what it answered."""

    def __init__(self, mine):
        self.mine = mine
        self.scheduler = None
        self.calls: list[dict] = []

    def __call__(self, drafts, q, p_logits, params, generator=None):
        step = self.scheduler.num_steps - 1 if self.scheduler is not None else -1
        call = {
            "step": step,
            "drafts": drafts.tolist(),
            "q": None if params.greedy else q.detach().cpu().clone(),
            "p_logits": p_logits.detach().cpu().clone(),  # [b, k + 1, vocab]
            "params": params.to_dict(),
            "state": None if generator is None else generator.get_state().clone(),
        }
        got = self.mine(drafts, q, p_logits, params, generator)
        call["verdict"] = _read(got, drafts.shape[0], f"step {step}: my_verifier")
        call["after"] = None if generator is None else _digest(generator)
        self.calls.append(call)
        return got


def _read(got, rows: int, call: str):
    """[num_accepted, tokens] lists of `rows` sequences, or a Mismatch saying what came back."""
    try:
        nums = [int(a) for a in got.num_accepted]
        tokens = [[int(x) for x in t] for t in got.tokens]
    except (AttributeError, TypeError, ValueError):
        raise Mismatch(
            f"{call} returned {got!r}; the engine reads .num_accepted and .tokens from it"
        ) from None
    if len(nums) != rows or len(tokens) != rows:
        raise Mismatch(f"{call} answered for {len(nums)} sequences; {rows} were verified")
    return [nums, tokens]


def _on_the_boundary(drafts, q, p_logits, params, state) -> bool:
    """Was some acceptance test (u_j q_j(x_j) < p_j(x_j)) within rounding of its threshold?"""
    p = torch.stack([filter_logits(row, params).softmax(-1) for row in p_logits])
    g = torch.Generator()
    g.set_state(state)
    u = torch.rand(1, len(drafts), generator=g, dtype=p.dtype)[0]
    for j, x in enumerate(drafts):
        px, qx = float(p[j, x]), float(q[j, x])
        if abs(float(u[j]) * qx - px) <= BOUNDARY * max(px, 1e-30):
            return True
    return False


def _verdict_message(step, drafts, logits, q, params, got, want) -> str:
    k = len(drafts)
    if params.greedy:
        best = logits.argmax(-1).tolist()
        return (
            f"step {step}, a greedy request: the draft guessed {drafts}, the target's argmax at "
            f"the {k + 1} positions is {best}; your verdict {got}, minirt's {want} (accept while "
            "each guess is the target's choice, then the target's own token)"
        )
    return (
        f"step {step}, a sampled request (temperature {params.temperature}, top_k "
        f"{params.top_k}, top_p {params.top_p}): the draft guessed {drafts}; your verdict {got}, "
        f"minirt's on the same random numbers {want}"
    )


# -- the cases and the runs ------------------------------------------------------------------
def _prompts(rng: random.Random, tokenizer, n: int) -> list[list[int]]:
    text = _text()
    out = []
    for _ in range(n):
        m = rng.randint(8, 60)
        start = rng.randrange(len(text) - m)
        out.append(tokenizer.encode(text[start : start + m]))
    return out


def _engine(**kw):
    from minirt import LLM  # the engine, only for this task

    return LLM(device="cpu", trace=True, **kw)


def _params(rng: random.Random, kind: str, n: int, max_tokens: int) -> list[SamplingParams]:
    out = []
    for j in range(n):
        sampled = kind == "sampled" or (kind == "mixed" and j % 2)
        if not sampled:
            out.append(SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True))
            continue
        out.append(
            SamplingParams(
                temperature=rng.choice((0.6, 0.8, 1.0)),
                top_k=rng.choice((-1, -1, 20)),
                top_p=rng.choice((1.0, 1.0, 0.9)),
                max_tokens=max_tokens,
                ignore_eos=True,
                seed=rng.randrange(2**31),
            )
        )
    return out


CASES = ("greedy", "sampled", "mixed")


def draw(rng: random.Random, i: int) -> dict:
    """Case `i`: greedy, sampled or mixed requests; every other case in a pool that preempts."""
    kind = CASES[i % 3]
    k, bs = rng.randint(2, 5), rng.choice((2, 4, 8))
    n, max_tokens = rng.randint(2, 4), rng.randint(10, 20)
    tight = i % 2 == 1  # a pool that preempts: rollbacks then recomputes
    prompts = _prompts(rng, _tokenizer(), n)
    longest = max(map(len, prompts)) + max_tokens + k + 1
    num_blocks = -(-longest // bs) + (rng.randint(1, 3) if tight else 64)
    params = [p.to_dict() for p in _params(rng, kind, n, max_tokens)]
    about = (
        f"{kind} requests, {n} prompts of {[len(p) for p in prompts]} tokens, "
        f"max_tokens {max_tokens}, k = {k}, block_size {bs}, {num_blocks} blocks"
        + (" (the pool preempts)" if tight else "")
    )
    return {
        "prompts": prompts,
        "params": params,
        "k": k,
        "block_size": bs,
        "num_blocks": num_blocks,
        "about": about,
        "size": sum(map(len, prompts)) + n * max_tokens,
    }


def _spec(case: dict) -> dict:
    bs = case["block_size"]
    return dict(
        speculative_model="draft",
        num_speculative_tokens=case["k"],
        block_size=bs,
        kv_cache_bytes=case["num_blocks"] * bs * BYTES_PER_TOKEN,
        max_num_batched_tokens=48,
    )


def _sampling(case: dict) -> list[SamplingParams]:
    return [SamplingParams(**p) for p in case["params"]]


def _step(e: dict) -> dict:
    """A step of the speculative engine's trace as plain data: engine_runs' record of it, what
    each sequence had computed, and the verdicts with their rollbacks."""
    out = step_record(e)
    out["computed"] = {s["seq_id"]: s["num_computed_tokens"] for s in e["scheduled"]}
    keys = ("seq_id", *SPEC_FIELDS)
    out["spec"] = [{key: s[key] for key in keys} for s in e["spec"]]
    return out


def _run(llm, case: dict) -> dict:
    outputs = llm.generate(case["prompts"], _sampling(case), use_tqdm=False)
    steps = [_step(e) for e in llm.recorder.events if e["type"] == "step"]
    return {"steps": steps, "tokens": [list(o.token_ids) for o in outputs]}


def play(learner, case: dict) -> dict:
    """The learner's engine on the case: every verifier call, the run and its books at the end;
    if the run raised, the calls before it and what it raised."""
    recorder = _Recorder(learner.my_verifier)
    mine = _engine(spec_verifier=recorder, prefix_cache=learner.MyBlocks, **_spec(case))
    recorder.scheduler = mine.scheduler
    try:
        run = _run(mine, case)
    except NotImplementedError:
        raise
    except Mismatch as e:  # a verdict the engine cannot read
        raise Mismatch(f"{case['about']}: {e}", case["size"]) from None
    except Exception as e:  # judged after the verdicts before it: a wrong one may have caused it
        return {"calls": recorder.calls, "raised": [type(e).__name__, f"{e}{_where(e)}"]}
    return {"calls": recorder.calls, **run, "books": books_after(mine.block_manager)}


def expect(case: dict) -> dict:
    """minirt's speculative engine on the case, and the plain engine on its greedy requests."""
    ref = _run(_engine(**_spec(case)), case)
    params = _sampling(case)
    greedy = [j for j, p in enumerate(params) if p.greedy]
    ref["plain"] = {}
    if greedy:
        plain = _engine(num_kv_blocks=64)
        prompts = [case["prompts"][j] for j in greedy]
        outs = plain.generate(prompts, params[greedy[0]], use_tqdm=False)
        ref["plain"] = {j: list(o.token_ids) for j, o in zip(greedy, outs, strict=True)}
    return ref


def precheck(got: dict, case: dict) -> None:
    """What the learner's run shows on its own, before minirt's engines run: every verdict
    (against minirt's verifier on the recorded inputs), a run that failed, every rollback."""
    about, size = case["about"], case["size"]
    _check_verdicts(got["calls"], about, size)
    if "raised" in got:  # every verdict before it was right: the run itself failed
        from minirt.grading.replay import _rebuilt

        raise _rebuilt(*got["raised"])
    if not got["calls"]:
        raise Mismatch(f"{about}: the engine never called my_verifier", size)
    _check_rollbacks(about, got["steps"], case["block_size"], size)


def compare(got: dict, want: dict, case: dict) -> None:
    """The run beside minirt's speculative engine (unless a verdict on the boundary let the runs
    part), greedy outputs beside the plain engine's, then the books (after `precheck`)."""
    about, size = case["about"], case["size"]
    tolerated = _check_verdicts(got["calls"], about, size)
    if not tolerated:  # the same verdicts: the same run as minirt's, step for step
        _compare_runs(about, got["steps"], want["steps"], size)
        for j, (a, b) in enumerate(zip(got["tokens"], want["tokens"], strict=True)):
            if a != b:
                raise Mismatch(
                    f"{about}, request {j + 1}: generated {a}, minirt's speculative engine {b}",
                    size,
                )
    for j, b in want["plain"].items():
        a = got["tokens"][j]
        if a != b:
            first = _first_difference(a, b)
            raise Mismatch(
                f"{about}, greedy request {j + 1}: token {first + 1} is "
                f"{a[first : first + 1]}; the engine without a draft says "
                f"{b[first : first + 1]} (speculation must not change a greedy output)",
                size,
            )
    check_books_after(got["books"], about, size, "a rollback that kept or lost a block?")


def _check_verdicts(calls: list[dict], about: str, size: int) -> int:
    """Every recorded verdict against minirt's verifier on the same inputs and random numbers;
    how many differed only where float32 rounding may decide either way."""
    tolerated = 0
    for call in calls:
        drafts, q, p_logits = torch.tensor(call["drafts"]), call["q"], call["p_logits"]
        params, step, state = SamplingParams(**call["params"]), call["step"], call["state"]
        twin = None
        if state is not None:
            twin = torch.Generator()
            twin.set_state(state)
        want = verify(drafts, q, p_logits, params, twin)
        nums, tokens = call["verdict"]
        for row, (a, t, wa, wt) in enumerate(
            zip(nums, tokens, want.num_accepted, want.tokens, strict=True)
        ):
            if (a, t) == (wa, wt):
                continue
            d = call["drafts"][row]
            if not params.greedy and a != wa and _on_the_boundary(d, q, p_logits[0], params, state):
                tolerated += 1  # float32 rounding: either verdict is right
                continue
            message = _verdict_message(step, d, p_logits[row], q, params, (a, t), (wa, wt))
            raise Mismatch(f"{about}: {message}", size)
        if twin is not None and call["after"] != _digest(twin):
            raise Mismatch(
                f"{about}: step {step}: the sampled verdict used the request's random numbers "
                "differently from minirt's (the rule takes its k uniforms and then draws exactly "
                "one token with draw)",
                size,
            )
    return tolerated


def _first_difference(a: list[int], b: list[int]) -> int:
    return next(
        (t for t, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _check_rollbacks(case: str, steps: list[dict], bs: int, size: int) -> None:
    """After a verdict, a sequence keeps the blocks of its valid tokens (x_0 and the accepted
    guesses after those computed before) and frees the rest, last first."""
    for e in steps:
        computed = e["computed"]
        for s in e["spec"]:
            seq, before = s["seq_id"], s["table_before"]
            kept = computed[seq] + 1 + s["num_accepted"]
            need = -(-kept // bs)
            after = e["block_tables"].get(seq)
            where = (
                f"{case}, step {e['step']}, sequence {seq}: {kept} tokens kept ({computed[seq]} "
                f"computed, x_0, {s['num_accepted']} accepted guesses), table before the "
                f"rollback {before}"
            )
            if after is not None and after != before[:need]:
                raise Mismatch(
                    f"{where}: the table after it is {after}; it should be its first {need} "
                    f"blocks {before[:need]} (ceil({kept} / {bs}))",
                    size,
                )
            if s["freed_blocks"] != before[need:][::-1]:
                raise Mismatch(
                    f"{where}: freed {s['freed_blocks']}; the blocks past the kept tokens, last "
                    f"first, are {before[need:][::-1]}",
                    size,
                )


def _compare_runs(about: str, mine: list[dict], want: list[dict], size: int) -> None:
    """The first step where the runs differ: a sequence's verdict or rollback, then what the
    step scheduled, the block tables and the free blocks."""
    for m, w in zip(mine, want, strict=False):
        step = f"{about}, step {m['step']}"
        for a, b in zip(m["spec"], w["spec"], strict=False):
            for key in SPEC_FIELDS:
                if a[key] != b[key]:
                    raise Mismatch(
                        f"{step}, sequence {a['seq_id']}: {key} {a[key]}; in minirt's run {b[key]}",
                        size,
                    )
        diff = first_step_difference(m, w, STEP_FIELDS)
        if diff:
            raise Mismatch(f"{step}: {diff[1]}", size)
    if len(mine) != len(want):
        raise Mismatch(f"{about}: your run took {len(mine)} steps; minirt's {len(want)}", size)
