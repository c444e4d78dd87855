"""Lab 3 (labs/lab03_speculative.ipynb): speculative decoding's acceptance rule, greedy and
sampled, and the KV rollback after a rejection, then all three inside the engine. Expected
answers come from minirt: `greedy_verify`, `rejection_sample` played on the very random numbers
it draws (so the learner's answer must be minirt's exactly), `BlockManager.truncate`; task 2 ends
with a chi-square test of the learner's rule with real random numbers, as
tests/spec/test_rejection.py tests minirt's own. Task 4 (lab03_engine.py) runs
`LLM(spec_verifier=my_verifier, prefix_cache=MyBlocks)` beside minirt's speculative engine.

Every verdict is made apart from the learner's code: tasks 1 and 3 answer by what they return
(`pure`); task 2's worker records the learner's verdict and the distributions it drew from (and,
for the statistics, its verdicts on real random numbers), and the parent computes minirt's
answers and the chi-square statistic; task 4's worker records the learner's engine run.
"""

from __future__ import annotations

import operator
import random
from collections import Counter
from types import SimpleNamespace

import numpy as np
import torch
from scipy.stats import chisquare

from minirt.grading import lab03_engine
from minirt.grading.core import Mismatch, Task
from minirt.grading.guard import Forbidden
from minirt.kv import BlockManager
from minirt.spec import greedy_verify, rejection_sample

FORBIDDEN = Forbidden(
    modules=("minirt.spec.rejection", "minirt.spec.decoder"),
    names=(
        "greedy_verify",
        "rejection_sample",
        "verify",
        "verifier",  # the engine's verifier: minirt's, unless it is yours
        "truncate",
        "BlockManager.truncate",  # (by its qualified name: the object check)
        "SpecRunner",
    ),
    what="minirt's speculative verifier and rollback",
    allow=("rejection", "decoder"),  # everyday words; the modules' contents stay refused
)

F64 = torch.float64
STAT_SEED, STAT_STEPS, STAT_VOCAB, STAT_K = 3, 20_000, 5, 3  # task 2's statistical check
SAMPLED_CASES = 40  # task 2: the last one is the statistical check
STAT_MIN_PVALUE = 1e-6  # the right rule scores 0.17-0.97 on STAT_SEED; wrong ones below 1e-90


def _fmt(xs) -> str:
    """Probabilities with 3 decimals (and anything else readably)."""
    return "[" + ", ".join(f"{x:.3f}" if abs(x) < 10 else f"{x:.3g}" for x in xs) + "]"


def _verdict(got, call: str) -> tuple[int, list[int]]:
    """(num_accepted, tokens) as plain ints, or a Mismatch that says what came back instead."""
    try:
        num_accepted, tokens = got
        if isinstance(num_accepted, bool):
            raise TypeError
        num_accepted = operator.index(num_accepted)  # an int, a numpy int or a 0-d tensor
        tokens = [operator.index(t) for t in tokens]  # a list, a tuple or a 1-d tensor
    except (TypeError, ValueError):
        raise Mismatch(
            f"{call} returned {got!r}; expected a pair (num_accepted, tokens): an int and a list "
            "of token ids"
        ) from None
    return num_accepted, tokens


def _emits(a: int, k: int, tokens: list[int], call: str, got: tuple) -> None:
    """What every verdict must look like: 0 <= a <= k, and a + 1 tokens."""
    if not 0 <= a <= k:
        raise Mismatch(f"{call} returned {got}: {a} accepted guesses out of k = {k}?")
    if len(tokens) != a + 1:
        what = "the bonus token" if a == k else "the target's own token at the first rejection"
        raise Mismatch(
            f"{call} returned {got}: {a} accepted guesses, so the step emits {a + 1} tokens "
            f"(the {a} accepted guesses, then {what}), not {len(tokens)}"
        )


# -- task 1: greedy verification --------------------------------------------------------------
def _greedy_case(rng: random.Random, i: int) -> tuple[list[int], torch.Tensor, str]:
    """Drafts that agree with the target's argmax for a while: all of them (case 0), none
    (case 1), the seed's 5 drafted with the 3rd rejected (case 2), then anything. Past the first
    disagreement, guesses often agree again: acceptance must stop at the first one anyway."""
    k, vocab = rng.randint(1, 8), rng.randint(4, 64)
    agree = [k, 0][i] if i < 2 else rng.randint(0, k)
    note = ["every guess agrees", "the first guess disagrees", ""][min(i, 2)]
    if i == 2:
        k, agree, note = 5, 2, "the seed's case: 5 drafted, the 3rd rejected"
    g = torch.Generator().manual_seed(rng.randrange(2**32))
    logits = torch.randn(k + 1, vocab, generator=g)  # [k + 1, vocab]: no ties
    best = logits.argmax(-1).tolist()
    drafts = best[:k]
    for j in range(agree, k):
        if j == agree or rng.random() < 0.4:
            drafts[j] = rng.choice([t for t in range(vocab) if t != best[j]])
    return drafts, logits, note


def check_greedy(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    drafts, logits, note = _greedy_case(rng, i)
    k = len(drafts)
    v = greedy_verify(torch.tensor([drafts]), logits[None])
    want_a, want = v.num_accepted[0], v.tokens[0]
    best = logits.argmax(-1).tolist()
    call = (
        f"greedy_accept(draft_tokens={drafts}, target_logits=<{k + 1}x{logits.shape[1]} "
        f"tensor, argmax of each row {best}>)"
    )
    if note:
        call += f" ({note})"
    got = _verdict(learner.greedy_accept(list(drafts), logits.clone()), call)
    a, tokens = got
    if a != want_a:
        first = next((j for j in range(k) if drafts[j] != best[j]), k)
        why = (
            f"guess {first} ({drafts[first]}) is not the target's choice ({best[first]}), so "
            f"acceptance stops there: {want_a} accepted"
            if first < k
            else f"every guess is the target's choice: all {k} are accepted"
        )
        if a > want_a and first < k:
            why += ", even though later guesses agree again (each was drafted after a wrong one)"
        raise Mismatch(f"{call} returned {got}; {why} (minirt's greedy_verify: {want_a})")
    _emits(a, k, tokens, call, got)
    if tokens[:a] != drafts[:a]:
        raise Mismatch(
            f"{call} returned {got}: the first {a} tokens are the accepted guesses {drafts[:a]}"
        )
    if tokens[a] != want[a]:
        row = f"target_logits[{a}]"
        what = "the bonus token" if a == k else f"the target's correction of guess {a}"
        raise Mismatch(
            f"{call} returned {got}: the last token is {what}, the argmax of {row}: "
            f"{want[a]} (minirt's greedy_verify: {want})"
        )


# -- task 2: the sampled rule, on given random numbers ----------------------------------------
class _Draw:
    """The `draw` a learner's rule calls for its one non-draft token. It notes each distribution
    it gets and draws with torch.multinomial from `gen`, as `rejection_sample` does after its
    uniforms: from the right distribution, that is minirt's very token."""

    def __init__(self, gen: torch.Generator):
        self.gen, self.calls = gen, []

    def __call__(self, probs) -> int:
        probs = torch.as_tensor(probs).detach().to(F64).reshape(-1)
        self.calls.append(probs.clone())
        if not (torch.isfinite(probs).all() and (probs >= 0).all() and probs.sum() > 0):
            return 0  # not a distribution: the grader says so after the call
        return int(torch.multinomial(probs.reshape(1, -1), 1, generator=self.gen))


def _sampler(rng: random.Random):
    """A `draw` with real random numbers, by inverse CDF: fast enough for thousands of steps
    (the exact cases have checked already that it gets distributions)."""

    def draw(probs) -> int:
        ps = probs.tolist() if isinstance(probs, torch.Tensor) else list(probs)
        v, acc = rng.random() * sum(ps), 0.0
        for token, x in enumerate(ps):
            acc += x
            if v < acc:
                return token
        return len(ps) - 1

    return draw


def _dists(g: torch.Generator, rows: int, vocab: int, scale: float) -> torch.Tensor:
    return torch.softmax(scale * torch.randn(rows, vocab, generator=g, dtype=F64), -1)


def _draft(g: torch.Generator, q: torch.Tensor) -> list[int]:
    """Guesses drawn from the draft's q, one per row (as the draft model draws them)."""
    return [int(torch.multinomial(row, 1, generator=g)) for row in q]


def _sampled_case(rng: random.Random, i: int):
    """(drafts, q, p, seed, note): case 0 a draft identical to the target (all accepted), 1 the
    first guess rejected, 2 the seed's 5 drafted with the 3rd rejected, 3 all accepted though
    q != p, then anything; drafts from q, `seed` the generator rejection_sample draws from."""
    want = {1: 0, 2: 2, 3: "k"}.get(i)
    note = [
        "the draft is the target: q = p",
        "",
        "the seed's case: 5 drafted, the 3rd rejected",
        "",
    ][min(i, 3)]
    g = torch.Generator().manual_seed(rng.randrange(2**32))
    for _ in range(1000):  # a handful of tries: the wanted verdicts are not rare
        k = 5 if i == 2 else rng.randint(1, 3) if i == 3 else rng.randint(1, 6)
        vocab = rng.randint(3, 12)
        p = _dists(g, k + 1, vocab, rng.uniform(0.5, 3.0))  # [k + 1, vocab]
        mix = 1.0 if i == 0 else rng.choice((0.0, 0.5, 0.8, 0.95))  # how alike the draft is
        q = mix * p[:k] + (1 - mix) * _dists(g, k, vocab, rng.uniform(0.5, 3.0))  # [k, vocab]
        drafts, seed = _draft(g, q), rng.randrange(2**32)
        v = _reference(drafts, q, p, seed)
        if want is None or v.num_accepted[0] == (k if want == "k" else want):
            return drafts, q, p, seed, note
    raise RuntimeError(f"no case {i} found in 1000 tries")


def _reference(drafts: list[int], q: torch.Tensor, p: torch.Tensor, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return rejection_sample(torch.tensor([drafts]), q[None], p[None], generator=gen)


def _residual(p_row: torch.Tensor, q_row: torch.Tensor) -> torch.Tensor:
    r = (p_row - q_row).clamp_min(0)
    return r / r.sum()


def _which(dist: torch.Tensor, q: torch.Tensor, p: torch.Tensor) -> str | None:
    """Name the distribution `dist` is, if it is one a slip would draw from."""
    k = q.shape[0]
    named = [(f"p[{j}]", p[j]) for j in range(k + 1)]
    named += [(f"norm(max(0, p[{j}] - q[{j}]))", _residual(p[j], q[j])) for j in range(k)]
    named += [(f"q[{j}]", q[j]) for j in range(k)]
    for name, d in named:
        if d.shape == dist.shape and torch.allclose(dist, d, rtol=1e-6, atol=1e-9):
            return name
    return None


def _check_drawn(dist, a: int, q, p, call: str, got) -> None:
    """The one distribution drawn from: the residual at the first rejection, or p[k]."""
    k, vocab = q.shape
    if a < k:
        want, name = _residual(p[a], q[a]), f"the residual norm(max(0, p[{a}] - q[{a}]))"
        context = (
            f"guess {a} was rejected: the last token comes from {name} = "
            f"{_fmt(want)}, with p[{a}] = {_fmt(p[a])} and q[{a}] = {_fmt(q[a])}"
        )
    else:
        want, name = p[k], f"p[{k}]"
        context = (
            f"all {k} guesses were accepted: the bonus token comes from the target's "
            f"distribution after the last guess, p[{k}] = {_fmt(p[k])}"
        )
    head = f"{call} returned {got}; {context}; draw() got {_fmt(dist)}"
    if dist.shape != (vocab,):
        raise Mismatch(
            f"{head}: {dist.numel()} numbers, not one per token of the vocabulary ({vocab})"
        )
    if not torch.isfinite(dist).all():
        raise Mismatch(
            f"{head}: not a number. Did you divide by a sum of 0? p - q sums to 0 "
            "over the vocabulary; clamp it at 0 first, then normalize"
        )
    if (dist < 0).any():
        raise Mismatch(
            f"{head}: it has negative entries; clamp p - q at 0 (max(0, p - q)) before normalizing"
        )
    if abs(float(dist.sum()) - 1) > 1e-6:
        raise Mismatch(
            f"{head}: it sums to {float(dist.sum()):.4f}, not 1; normalize it (divide by its sum)"
        )
    if not torch.allclose(dist, want, rtol=1e-6, atol=1e-9):
        slip = _which(dist, q, p)
        hint = f": that is {slip}" if slip else ""
        if a < k and slip == f"p[{a}]":
            hint += (
                ", the target alone; the residual removes what the draft already proposed "
                "and had accepted, or those tokens come out too often"
            )
        raise Mismatch(f"{head}{hint}")


def _acceptance(drafts, q, p, u) -> str:
    rows = []
    for j, (x, uj) in enumerate(zip(drafts, u, strict=True)):
        ratio = float(p[j, x] / q[j, x])
        verdict = "accept" if uj * float(q[j, x]) < float(p[j, x]) else "reject"
        rows.append(
            f"guess {j} (token {x}): u[{j}] = {uj:.3f}, p[{j}][{x}] / q[{j}][{x}] = "
            f"{float(p[j, x]):.3f} / {float(q[j, x]):.3f} = {ratio:.3f} -> {verdict}"
        )
        if verdict == "reject":
            break
    return "; ".join(rows)


def draw_sampled(rng: random.Random, i: int) -> dict:
    """The exact cases (drafts, q, p and the seed of the random numbers), then the statistics."""
    if i == SAMPLED_CASES - 1:
        return {"statistics": True}
    drafts, q, p, seed, note = _sampled_case(rng, i)
    return {"drafts": drafts, "q": q, "p": p, "seed": seed, "note": note}


def _uniforms(case: dict) -> tuple[list[float], torch.Generator]:
    """rejection_sample's uniforms for the case, and its generator's state after them."""
    gen = torch.Generator().manual_seed(case["seed"])
    u = torch.rand(1, len(case["drafts"]), generator=gen, dtype=F64)[0].tolist()
    return u, gen


def play_sampled(learner: SimpleNamespace, case: dict) -> dict:
    """The learner's verdict on the case's random numbers, and every distribution it drew from
    (or its verdicts on the statistics' real random numbers)."""
    if case.get("statistics"):
        return {"steps": play_distribution(learner.accept_or_reject)}
    u, gen = _uniforms(case)
    draw = _Draw(gen)
    q, p = case["q"], case["p"]
    got = learner.accept_or_reject(list(case["drafts"]), q.clone(), p.clone(), list(u), draw)
    return {"returned": got, "draws": draw.calls}


def expect_sampled(case: dict) -> dict | None:
    if case.get("statistics"):
        return None  # the target's own p: the statistic is computed from the learner's tokens
    v = _reference(case["drafts"], case["q"], case["p"], case["seed"])
    return {"num_accepted": v.num_accepted[0], "tokens": v.tokens[0]}


def compare_sampled(got: dict, want: dict | None, case: dict) -> None:
    if case.get("statistics"):
        return judge_distribution(got["steps"])
    drafts, q, p, note = case["drafts"], case["q"], case["p"], case["note"]
    k = len(drafts)
    u, _ = _uniforms(case)
    want_a, want = want["num_accepted"], want["tokens"]
    call = (
        f"accept_or_reject(draft_tokens={drafts}, q=<{k}x{q.shape[1]}>, p=<{k + 1}x"
        f"{q.shape[1]}>, u={_fmt(u)}, draw)"
    )
    if note:
        call += f" ({note})"
    got, draws = _verdict(got["returned"], call), got["draws"]
    a, tokens = got
    if a != want_a:
        raise Mismatch(
            f"{call} returned {got}; minirt accepts {want_a}: accept guess j when "
            f"u[j] < p[j][x_j] / q[j][x_j], in order, until the first rejection: "
            f"{_acceptance(drafts, q, p, u)}"
        )
    if not draws:
        what = (
            f"every guess was accepted ({k} of {k}), and the step still emits one more "
            f"token: the bonus, draw(p[{k}])"
            if a == k
            else f"guess {a} was rejected: the token in "
            f"its place comes from draw(norm(max(0, p[{a}] - q[{a}])))"
        )
        raise Mismatch(f"{call} returned {got} without calling draw; {what}")
    if len(draws) > 1:
        raise Mismatch(
            f"{call} called draw {len(draws)} times; a step draws exactly one "
            "token from a distribution, the last one (the residual's or the bonus)"
        )
    _emits(a, k, tokens, call, got)
    if tokens[:a] != drafts[:a]:
        raise Mismatch(
            f"{call} returned {got}: the first {a} tokens are the accepted guesses {drafts[:a]}"
        )
    _check_drawn(draws[0], a, q, p, call, got)
    if tokens != want:  # the right distribution, so the same multinomial draw as minirt's
        raise Mismatch(
            f"{call} returned {got}: the last token is the one draw() returned; "
            f"minirt's rejection_sample gives {want}"
        )


def _toy_model(steps: int, seed: int):
    """The statistics' toy model: (p, q, drafts, u), drafts and uniforms per step."""
    g = torch.Generator().manual_seed(seed)
    vocab, k = STAT_VOCAB, STAT_K
    # Mixed with the uniform distribution so that every token is expected often enough.
    p = 0.8 * _dists(g, k + 1, vocab, 1.5) + 0.2 / vocab  # [k + 1, vocab]
    q = 0.8 * _dists(g, k, vocab, 1.5) + 0.2 / vocab  # [k, vocab], unlike p
    drafts = torch.stack(
        [torch.multinomial(row, steps, replacement=True, generator=g) for row in q], 1
    ).tolist()
    u = torch.rand(steps, k, generator=g, dtype=F64).tolist()
    return p, q, drafts, u


def play_distribution(accept_or_reject, steps: int = STAT_STEPS, seed: int = STAT_SEED) -> list:
    """`steps` speculative steps of a toy model (the target's distribution depends only on the
    position) through `accept_or_reject` with real random numbers: each step's verdict as
    [num_accepted, tokens], up to the first that is not one (kept as it came back)."""
    p, q, drafts, u = _toy_model(steps, seed)
    draw = _sampler(random.Random(seed))
    out = []
    for t in range(steps):
        got = accept_or_reject(list(drafts[t]), q.clone(), p.clone(), u[t], draw)
        try:
            a, tokens = got
            if isinstance(a, bool):
                raise TypeError
            out.append([operator.index(a), [operator.index(x) for x in tokens]])
        except (TypeError, ValueError):
            out.append({"step": t, "returned": got})
            break
    return out


def judge_distribution(verdicts: list, steps: int = STAT_STEPS, seed: int = STAT_SEED) -> None:
    """The j-th token a step emits, among the steps that emit one, must follow p[j]
    (chi-square). Raises Mismatch."""
    p, _, drafts, _ = _toy_model(steps, seed)
    vocab, k = STAT_VOCAB, STAT_K
    counts = [[0] * vocab for _ in range(k + 1)]  # [position in the output][token]
    for t, got in enumerate(verdicts):
        bad = isinstance(got, dict)
        if not bad:
            a, tokens = got
            bad = not (0 <= a <= k and len(tokens) == a + 1)
            bad = bad or not all(0 <= x < vocab for x in tokens)
        if bad:  # not a verdict: say what is wrong with it
            got = got["returned"] if isinstance(got, dict) else tuple(got)
            call = f"accept_or_reject(draft_tokens={drafts[t]}, ...) (real random numbers)"
            a, tokens = _verdict(got, call)
            _emits(a, k, tokens, call, (a, tokens))
            raise Mismatch(
                f"{call} returned {got}: a token id outside the vocabulary 0..{vocab - 1}"
            )
        for j, x in enumerate(tokens):
            counts[j][x] += 1
    if len(verdicts) < steps:
        raise Mismatch(f"the statistics ran {len(verdicts):,} of {steps:,} steps")
    counts = np.array(counts)
    for j in range(k + 1):
        n = int(counts[j].sum())
        expected = n * p[j].numpy()
        pvalue = float(chisquare(counts[j], expected).pvalue)
        if not pvalue >= STAT_MIN_PVALUE:  # NaN fails too
            raise Mismatch(
                f"{steps:,} steps with real random numbers (vocabulary {vocab}, k = {k}, q unlike "
                f"p): the token at position {j} of a step's output should follow the target's "
                f"p[{j}], but it does not (chi-square p-value {pvalue:.1e}). Of the {n:,} steps "
                f"that emitted one, the counts per token are {counts[j].tolist()}, where p "
                f"expects {[round(x) for x in expected.tolist()]}. Speculative sampling must leave "
                "the target's distribution exactly as it is"
            )


def check_distribution(accept_or_reject, steps: int = STAT_STEPS, seed: int = STAT_SEED) -> None:
    """The statistics in one process: play `accept_or_reject`, judge its tokens."""
    judge_distribution(play_distribution(accept_or_reject, steps, seed), steps, seed)


# -- task 3: the KV rollback ------------------------------------------------------------------
def _rollback_case(rng: random.Random, i: int):
    """(block_size, computed, k, accepted, note): the sequence had `computed` tokens' KV, then
    one step verified its last token x_0 and k guesses, and accepted `accepted` of them."""
    bs, c, k = rng.randint(1, 16), rng.randint(0, 80), rng.randint(1, 8)
    a, note = rng.randint(0, k), ""
    if i == 0:
        bs, c, k, a = 4, 9, 5, 2
        note = "the seed's case: 10 tokens (x_0 the last), 5 drafted, the 3rd rejected"
    elif i == 1:
        a, note = k, "every guess accepted"
    elif i == 2:
        bs, a, note = 1, 0, "the first guess rejected, blocks of one token"
    elif i == 4:  # the kept tokens end exactly at a block's end
        first = -(-(1 + a) // bs)  # the fewest whole blocks that hold x_0 and the accepted
        c, note = rng.randint(first, first + 5) * bs - 1 - a, "the kept tokens fill whole blocks"
    return bs, c, k, a, note


def _rollback_table(rng: random.Random, bs: int, c: int, k: int) -> BlockManager:
    """A BlockManager where sequence 0 holds its c computed tokens, x_0 and k lookahead slots,
    in blocks whose ids are shuffled (as after a while of serving), another sequence's between."""
    need = -(-(c + 1 + k) // bs)
    bm = BlockManager(num_blocks=need + rng.randint(2, 24), block_size=bs)
    ids = list(range(bm.num_blocks))
    for b in ids:  # one block each, so that freeing them in random order shuffles the free list
        bm.allocate(b + 1, [], 1)
    rng.shuffle(ids)
    for b in ids:
        bm.free(b + 1)
    bm.allocate(0, [], c + 1)  # KV computed, and x_0 to compute this step
    bm.allocate(-1, [], rng.randint(1, (bm.num_free_blocks - (need - len(bm.tables[0]))) * bs))
    bm.append(0, c + 1 + k)  # the lookahead slots of the k guesses
    return bm


def check_roll_back(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    bs, c, k, a, note = _rollback_case(rng, i)
    bm = _rollback_table(rng, bs, c, k)
    table = list(bm.block_table(0))
    kept_tokens = c + 1 + a
    if i == 3:  # more tokens than the table has slots: truncate refuses
        kept_tokens, note = len(table) * bs + rng.randint(1, bs), "more tokens than slots"
    call = f"roll_back(block_table={table}, num_tokens_kept={kept_tokens}, block_size={bs})"
    note = note or f"{c} tokens computed, x_0, {k} guesses, {a} accepted"
    call += f" ({note})"
    try:
        want_freed = bm.truncate(0, kept_tokens)
    except ValueError:
        try:
            got = learner.roll_back(list(table), kept_tokens, bs)
        except ValueError:
            return
        raise Mismatch(
            f"{call} returned {got!r}; the table holds {len(table)} blocks of {bs} = "
            f"{len(table) * bs} slots, so it cannot keep {kept_tokens} tokens: raise ValueError"
        ) from None
    want_kept = list(bm.block_table(0))
    got = learner.roll_back(list(table), kept_tokens, bs)
    try:
        kept, freed = ([operator.index(b) for b in part] for part in got)
    except (TypeError, ValueError):
        raise Mismatch(
            f"{call} returned {got!r}; expected a pair of lists of block ids "
            "(kept_table, freed_blocks)"
        ) from None
    got = (kept, freed)
    slots = lambda j: f"slot {j}" if bs == 1 else f"slots {j * bs}..{(j + 1) * bs - 1}"  # noqa: E731
    extra = Counter(kept + freed) - Counter(table)
    if extra:
        b = next(iter(extra))
        where = "kept and freed" if b in kept and b in freed else "returned twice"
        if b not in table:
            where = "not in the table"
        raise Mismatch(
            f"{call} returned {got}: block {b} is {where}; every block of the table "
            "is either kept or freed, once"
        )
    lost = Counter(table) - Counter(kept + freed)
    if lost:
        b = next(iter(lost))
        raise Mismatch(
            f"{call} returned {got}: block {b} is neither kept nor freed: it would "
            "leak, held by no table and never reused"
        )
    if kept != table[: len(kept)]:
        raise Mismatch(
            f"{call} returned {got}: the kept table must be the table's first blocks, "
            "in order: block j of a table holds the sequence's slots j * block_size "
            "to (j + 1) * block_size - 1"
        )
    need = len(want_kept)
    if len(kept) > need:
        j = need
        raise Mismatch(
            f"{call} returned {got}: {kept_tokens} tokens in blocks of {bs} need {need} blocks "
            f"(ceil({kept_tokens} / {bs})), you kept {len(kept)}. Block {table[j]} ({slots(j)} "
            f"of the sequence) holds only rejected guesses: kept, it stays taken with no valid "
            "token in it, memory no other sequence can use (a leak); a table holds exactly the "
            "blocks its tokens need"
        )
    if len(kept) < need:
        j = len(kept)
        last = min((j + 1) * bs, kept_tokens) - 1
        where = f"slot {last}" if last == j * bs else f"slots {j * bs}..{last}"
        raise Mismatch(
            f"{call} returned {got}: you freed block {table[j]}, which holds tokens the sequence "
            f"keeps ({where}); {kept_tokens} tokens in blocks of {bs} need {need} blocks "
            f"(ceil({kept_tokens} / {bs})). Another sequence could get the block and overwrite "
            "KV this one still reads"
        )
    if freed != want_freed:
        raise Mismatch(
            f"{call} returned {got}: the right blocks, freed in another order; free "
            f"from the end of the table backwards, as BlockManager.truncate pops "
            f"them: {want_freed}"
        )


TASKS = [
    Task("1", "greedy_accept", 2, ("greedy_accept",), check_greedy, num_cases=60, pure=True),
    Task(
        "2",
        "accept_or_reject",
        5,
        ("accept_or_reject",),
        None,
        SAMPLED_CASES,
        draw=draw_sampled,
        play=play_sampled,
        expect=expect_sampled,
        compare=compare_sampled,
    ),
    Task("3", "roll_back", 3, ("roll_back",), check_roll_back, num_cases=80, pure=True),
    Task(
        "4",
        "your verifier and rollback in the engine",
        5,
        ("greedy_accept", "accept_or_reject", "roll_back", "my_verifier", "MyBlocks"),
        None,
        num_cases=6,
        draw=lab03_engine.draw,
        play=lab03_engine.play,
        expect=lab03_engine.expect,
        compare=lab03_engine.compare,
        precheck=lab03_engine.precheck,
    ),
]
