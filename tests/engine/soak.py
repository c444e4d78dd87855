"""A differential soak test of the engine: random batches on every engine configuration, each
greedy output checked against the same prompt run alone on a plain engine, the books after each.

Engines differ in preemption (recompute, swap), prefix cache (hash, radix), speculation (off, or
k = 1..4 with the embedded draft), overlap scheduling, policy, token budget, block size and a pool
small enough to preempt; every pool is dirtied with another prompt's KV before use (and starts
NaN-filled under MINIRT_POISON_KV). A call fails on a wrong token, an error, a leaked block or a
sequence left in a queue; the report names the engine and the call, and

    python tests/engine/soak.py --seed S --engines I --calls N

replays that engine's calls up to the failing one (the same seed makes the same calls).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from minirt import LLM, SamplingParams

# Texts with shared prefixes: prompts are slices of these, so caches hit and miss at every length.
_DOCS = [Path(json.__file__).with_name(n).read_text() for n in ("decoder.py", "encoder.py")]
_TOKEN_BYTES = 8192  # KV bytes per token of the embedded model (fp32)


@dataclass
class Failure:
    seed: int
    engine: int
    call: int
    kwargs: dict
    what: str

    def __str__(self) -> str:
        return (
            f"engine {self.engine} {self.kwargs}, call {self.call}: {self.what}\n"
            f"  replay: python tests/engine/soak.py --seed {self.seed} --engines {self.engine} "
            f"--calls {self.call + 1}"
        )


@dataclass
class Report:
    calls: int = 0
    requests: int = 0
    preemptions: int = 0
    swap_outs: int = 0
    cached_tokens: int = 0
    failures: list[Failure] = field(default_factory=list)


def engine_kwargs(seed: int, i: int) -> dict:
    """Engine i of the soak: the axes cycle so that any 8 consecutive engines cover
    {recompute, swap} x {hash, radix} x {speculation off, on}; the rest is drawn at random."""
    rng = random.Random(f"{seed}/engine/{i}")
    block_size = rng.choice([8, 16])
    kw = {
        "device": "cpu",
        "preemption_mode": ("recompute", "swap")[i % 2],
        "prefix_cache": ("hash", "radix")[i // 2 % 2],
        "block_size": block_size,
        "max_num_batched_tokens": rng.choice([64, 256, 2048]),
        # 24-54 blocks of 16 tokens' worth: tight enough that batches preempt
        "kv_cache_bytes": rng.randint(24, 54) * 16 * _TOKEN_BYTES,
        "schedule_policy": rng.choice(["fcfs", "lpm"]),
    }
    if i // 4 % 2:
        kw |= {"speculative_model": "draft", "num_speculative_tokens": rng.randint(1, 4)}
    elif rng.random() < 0.5:
        kw["overlap_schedule"] = True
    speculates = bool(kw.get("num_speculative_tokens"))
    if kw["prefix_cache"] == "radix" and rng.random() < 0.3 and not speculates:
        kw["batch_priority"] = "prefill-first"
    return kw


def random_call(rng: random.Random, llm: LLM) -> tuple[list[list[int]], list[SamplingParams]]:
    """A batch of 1-16 prompts (1-300 tokens, sliced from shared texts) with their params."""
    k = llm.config.num_speculative_tokens
    room = llm.pool_capacity_tokens - 2 * llm.config.block_size - k  # alone, it must fit
    prompts, params = [], []
    for _ in range(rng.randint(1, 16)):
        max_tokens = rng.randint(1, 64)
        n = rng.randint(1, max(1, min(300, room - max_tokens)))
        doc = rng.choice(_DOCS)
        start = rng.choice([0, 0, 0, rng.randrange(len(doc) - n)])  # mostly shared starts
        prompts.append(llm.tokenizer.encode(doc[start : start + n])[:n] or [65])
        params.append(
            SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=rng.random() < 0.7)
        )
    return prompts, params


class Reference:
    """Greedy tokens of a prompt run alone on an engine without prefix caching or speculation."""

    def __init__(self) -> None:
        self.llm = LLM(device="cpu", prefix_cache=None, kv_cache_bytes=4096 * _TOKEN_BYTES)
        self.memo: dict[tuple, list[int]] = {}

    def __call__(self, prompt: list[int], p: SamplingParams) -> list[int]:
        key = (tuple(prompt), p.max_tokens, p.ignore_eos)
        if key not in self.memo:
            out = self.llm.generate([prompt], p, use_tqdm=False)[0]
            self.memo[key] = out.token_ids
        return self.memo[key]


def check_books(llm: LLM) -> str | None:
    """After a call every block, host block and queue is back where it started."""
    bm, sched = llm.block_manager, llm.scheduler
    bm.check_invariants()
    if bm.tables:
        return f"block tables left behind: {sorted(bm.tables)}"
    if bm.num_free_blocks != llm.num_blocks:
        return f"leaked blocks: {bm.num_free_blocks}/{llm.num_blocks} free"
    if sched.has_unfinished():
        return "the scheduler still holds sequences"
    swap = llm.runner.swap
    if swap is not None:
        host = swap.host.shape[0]
        if swap.num_free_blocks != host or sched.free_host_blocks != host:
            return f"leaked host blocks: {swap.num_free_blocks}, {sched.free_host_blocks} of {host}"
        if llm.runner.swapped_host:
            return f"swapped sequences left behind: {sorted(llm.runner.swapped_host)}"
    return None


def dirty(llm: LLM) -> None:
    """Fill the pool with a garbage prompt's KV, then forget it: stale reads change tokens."""
    fill = llm.pool_capacity_tokens - 2 * llm.config.block_size - llm.config.num_speculative_tokens
    llm.generate([[35] * fill], SamplingParams(temperature=0, max_tokens=1), use_tqdm=False)
    llm.block_manager.evict()


def soak(seed: int, engines: list[int], calls: int, reference: Reference, log=None) -> Report:
    report = Report()
    for i in engines:
        kw = engine_kwargs(seed, i)
        llm = LLM(**kw)
        dirty(llm)
        rng = random.Random(f"{seed}/calls/{i}")
        for c in range(calls):
            prompts, params = random_call(rng, llm)
            report.calls += 1
            report.requests += len(prompts)
            try:
                outs = llm.generate(prompts, params, use_tqdm=False)
            except Exception:
                what = "error: " + traceback.format_exc(limit=-3)
                report.failures.append(Failure(seed, i, c, kw, what))
                break  # the engine's state is suspect now; the next engine starts clean
            stats = llm.last_stats
            report.preemptions += stats.num_preemptions
            report.cached_tokens += stats.num_cached_tokens
            for j, (p, sp, out) in enumerate(zip(prompts, params, outs, strict=True)):
                want = reference(p, sp)
                if out.token_ids != want:
                    pairs = enumerate(zip(out.token_ids, want, strict=False))
                    first = next(
                        (t for t, (a, b) in pairs if a != b), min(len(out.token_ids), len(want))
                    )
                    what = (
                        f"request {j} ({len(p)} prompt tokens, {sp.max_tokens} max, cached "
                        f"{out.num_cached_tokens}) differs from its run alone at token {first}"
                    )
                    report.failures.append(Failure(seed, i, c, kw, what))
            if log is not None:
                print(f"  call {c}: {len(prompts)} requests, {stats.num_steps} steps", file=log)
            if (problem := check_books(llm)) is not None:
                report.failures.append(Failure(seed, i, c, kw, problem))
                break
        report.swap_outs += llm.scheduler.num_swap_outs
        if log is not None:
            print(f"engine {i}: {kw}, {len(report.failures)} failures so far", file=log)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", type=str, default="0-7", help="e.g. 0-7 or 3 or 0,5")
    ap.add_argument("--calls", type=int, default=40, help="generate calls per engine")
    args = ap.parse_args(argv)
    engines: list[int] = []
    for part in args.engines.split(","):
        lo, _, hi = part.partition("-")
        engines += range(int(lo), int(hi or lo) + 1)
    report = soak(args.seed, engines, args.calls, Reference(), log=sys.stderr)
    print(
        f"{report.calls} calls, {report.requests} requests, {report.preemptions} preemptions, "
        f"{report.swap_outs} swap-outs, {report.cached_tokens} cached prompt tokens; "
        f"{len(report.failures)} failures"
    )
    for f in report.failures:
        print(f)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
