"""Lab 3, task 4: the learner's verifier and rollback inside the speculative engine.

The notebook's `my_verifier` (tasks 1 and 2, one sequence at a time) runs as
`LLM(spec_verifier=my_verifier)` and its `MyBlocks` (minirt's block books, with task 3 deciding
which blocks a rollback keeps and frees) as `LLM(prefix_cache=MyBlocks)`. On fresh prompts
(greedy, sampled, or both in one batch, some in a pool small enough to preempt) every verdict is
checked against minirt's verifier on the same logits and the same random numbers; then the run
is compared with minirt's speculative engine step by step (proposals, verdicts, the rollback's
tables and freed blocks, free blocks), every rollback with the invariant it keeps, greedy outputs
with the plain engine's (no draft at all), and the books after the run (no leaked block).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import torch

from minirt.grading.core import Mismatch
from minirt.sampler import filter_logits
from minirt.sampling_params import SamplingParams
from minirt.spec.rejection import verify

BYTES_PER_TOKEN = 12288  # the embedded target's KV per token (8,192) and the draft's (4,096)
BOUNDARY = 1e-5  # |u q - p| / p below this: float32 rounding may decide either way


def _text() -> str:
    return Path(json.__file__).read_text()  # Python source, as the embedded pair was trained on


class _Spy:
    """The verifier the learner's engine runs: the learner's verdicts, each checked against
    minirt's `verify` on the same logits and a copy of the request's generator."""

    def __init__(self, mine):
        self.mine = mine
        self.scheduler = None
        self.calls = self.tolerated = 0

    def __call__(self, drafts, q, p_logits, params, generator=None):
        self.calls += 1
        state = generator.get_state() if generator is not None else None
        got = self.mine(drafts, q, p_logits, params, generator)
        twin = None
        if generator is not None:
            twin = torch.Generator(device=generator.device)
            twin.set_state(state)
        want = verify(drafts, q, p_logits, params, twin)
        step = self.scheduler.num_steps - 1 if self.scheduler is not None else "?"
        nums, tokens = _read(got, len(want.num_accepted), f"step {step}: my_verifier")
        for row, (a, t, wa, wt) in enumerate(
            zip(nums, tokens, want.num_accepted, want.tokens, strict=True)
        ):
            if (a, t) == (wa, wt):
                continue
            d = drafts[row].tolist()
            if not params.greedy and a != wa and _on_the_boundary(d, q, p_logits[0], params, state):
                self.tolerated += 1  # float32 rounding: either verdict is right
                continue
            raise Mismatch(_verdict_message(step, d, p_logits[row], q, params, (a, t), (wa, wt)))
        if generator is not None and not torch.equal(generator.get_state(), twin.get_state()):
            raise Mismatch(
                f"step {step}: the sampled verdict used the request's random numbers "
                "differently from minirt's (the rule takes its k uniforms and then draws exactly "
                "one token with draw)"
            )
        return got


def _read(got, rows: int, call: str):
    """(num_accepted, tokens) lists of `rows` sequences, or a Mismatch saying what came back."""
    try:
        nums = [int(a) for a in got.num_accepted]
        tokens = [[int(x) for x in t] for t in got.tokens]
    except (AttributeError, TypeError, ValueError):
        raise Mismatch(
            f"{call} returned {got!r}; the engine reads .num_accepted and .tokens from it"
        ) from None
    if len(nums) != rows or len(tokens) != rows:
        raise Mismatch(f"{call} answered for {len(nums)} sequences; {rows} were verified")
    return nums, tokens


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


# -- the runs ---------------------------------------------------------------------------------
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


def _steps(llm) -> list[dict]:
    return [e for e in llm.recorder.events if e["type"] == "step"]


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


def check_engine(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    kind = CASES[i % 3]
    k, bs = rng.randint(2, 5), rng.choice((2, 4, 8))
    n, max_tokens = rng.randint(2, 4), rng.randint(10, 20)
    tight = i % 2 == 1  # a pool that preempts: rollbacks then recomputes
    plain = _engine(num_kv_blocks=64)
    prompts = _prompts(rng, plain.tokenizer, n)
    longest = max(map(len, prompts)) + max_tokens + k + 1
    num_blocks = -(-longest // bs) + (rng.randint(1, 3) if tight else 64)
    params = _params(rng, kind, n, max_tokens)
    size = sum(map(len, prompts)) + n * max_tokens
    case = (
        f"{kind} requests, {n} prompts of {[len(p) for p in prompts]} tokens, "
        f"max_tokens {max_tokens}, k = {k}, block_size {bs}, {num_blocks} blocks"
        + (" (the pool preempts)" if tight else "")
    )
    spec = dict(
        speculative_model="draft",
        num_speculative_tokens=k,
        block_size=bs,
        kv_cache_bytes=num_blocks * bs * BYTES_PER_TOKEN,
        max_num_batched_tokens=48,
    )
    spy = _Spy(learner.my_verifier)
    mine = _engine(spec_verifier=spy, prefix_cache=learner.MyBlocks, **spec)
    spy.scheduler = mine.scheduler
    try:
        got = mine.generate(prompts, params, use_tqdm=False)
    except Mismatch as e:
        raise Mismatch(f"{case}: {e}", size) from e.__cause__
    if spy.calls == 0:
        raise Mismatch(f"{case}: the engine never called my_verifier", size)
    _check_rollbacks(case, _steps(mine), bs, size)
    if not spy.tolerated:  # the same verdicts: the same run as minirt's, step for step
        ref = _engine(**spec)
        want = ref.generate(prompts, params, use_tqdm=False)
        _compare_runs(case, _steps(mine), _steps(ref), size)
        for j, (a, b) in enumerate(zip(got, want, strict=True)):
            if a.token_ids != b.token_ids:
                raise Mismatch(
                    f"{case}, request {j + 1}: generated {a.token_ids}, minirt's speculative "
                    f"engine {b.token_ids}",
                    size,
                )
    greedy = [j for j, p in enumerate(params) if p.greedy]
    if greedy:
        base = plain.generate([prompts[j] for j in greedy], params[greedy[0]], use_tqdm=False)
        for j, b in zip(greedy, base, strict=True):
            if got[j].token_ids != b.token_ids:
                first = _first_difference(got[j].token_ids, b.token_ids)
                raise Mismatch(
                    f"{case}, greedy request {j + 1}: token {first + 1} is "
                    f"{got[j].token_ids[first : first + 1]}; the engine without a draft says "
                    f"{b.token_ids[first : first + 1]} (speculation must not change a greedy "
                    "output)",
                    size,
                )
    _check_books(case, mine.block_manager, size)


def _first_difference(a: list[int], b: list[int]) -> int:
    return next(
        (t for t, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _check_rollbacks(case: str, steps: list[dict], bs: int, size: int) -> None:
    """After a verdict, a sequence keeps the blocks of its valid tokens (x_0 and the accepted
    guesses after those computed before) and frees the rest, last first."""
    for e in steps:
        computed = {s["seq_id"]: s["num_computed_tokens"] for s in e["scheduled"]}
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


def _compare_runs(case: str, mine: list[dict], want: list[dict], size: int) -> None:
    for m, w in zip(mine, want, strict=False):
        step = f"{case}, step {m['step']}"
        for a, b in zip(m["spec"], w["spec"], strict=False):
            for key in ("proposed", "num_accepted", "emitted", "table_before", "freed_blocks"):
                if a[key] != b[key]:
                    raise Mismatch(
                        f"{step}, sequence {a['seq_id']}: {key} {a[key]}; in minirt's run {b[key]}",
                        size,
                    )
        if m["block_tables"] != w["block_tables"] or m["num_free_blocks"] != w["num_free_blocks"]:
            raise Mismatch(
                f"{step}: block tables {m['block_tables']} with {m['num_free_blocks']} free "
                f"blocks; minirt's {w['block_tables']} with {w['num_free_blocks']}",
                size,
            )
    if len(mine) != len(want):
        raise Mismatch(f"{case}: your run took {len(mine)} steps; minirt's {len(want)}", size)


def _check_books(case: str, bm, size: int) -> None:
    try:
        bm.check_invariants()
    except AssertionError as e:
        raise Mismatch(f"{case}: after the run, check_invariants says: {e}", size) from None
    if bm.tables:
        raise Mismatch(f"{case}: after the run sequences {sorted(bm.tables)} hold blocks", size)
    bm.evict()
    if bm.num_free_blocks != bm.num_blocks:
        raise Mismatch(
            f"{case}: with every request done, {bm.num_blocks - bm.num_free_blocks} blocks are "
            "not free (leaked: a rollback that kept or lost a block?)",
            size,
        )
