"""CPU benchmark of the engine: decode throughput at batch 1 vs 32, and the prefix-cache hit rate.

Batching is the first lesson of serving: one decode step reads every weight once, whatever the
batch, so tokens/s should grow with the batch until compute, not memory, is the limit. The
shared-prefix workload shows how much prompt work the prefix cache saves. Run it with
`python -m minirt.bench cpu`; the notebooks plot the JSON it writes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from minirt.bench.cli import add_no_progress, add_out, int_list, progress
from minirt.results import DEFAULT_OUT, load_results, write_results

TOPIC = "engine"

# Short code openings for the decode runs; shorter than a block, so the prefix cache plays no part.
DECODE_PROMPTS = [
    "def fib(n):",
    "class Stack:",
    "def add(a, b):",
    "import os\n",
    "def main():",
    "for i in range(",
    "def is_prime(n):",
    "with open(",
]

# A "system prompt" that every request of the shared-prefix workload starts with (about 300
# byte-level tokens: 18 blocks of 16, short enough for a 512-token model); each request then asks
# for a different function.
SHARED_PREFIX = '''"""Utilities for a small inventory service."""

from dataclasses import dataclass


@dataclass
class Item:
    name: str
    price: float
    quantity: int


def total_value(items: list[Item]) -> float:
    """Sum of price times quantity over all items."""
    return sum(item.price * item.quantity for item in items)

'''
SUFFIX_NAMES = ["cheapest", "dearest", "by_name", "in_stock", "out_of_stock", "count", "names"]


@dataclass
class CpuBenchConfig:
    """What to measure; the defaults are the reported benchmark, tests pass tiny sizes."""

    batch_sizes: tuple[int, ...] = (1, 32)
    max_tokens: int = 64  # decode tokens per sequence in the timed runs
    warmup_tokens: int = 8  # an untimed run first, so one-off costs stay out of the numbers
    prefix_prompts: int = 16
    prefix_max_tokens: int = 16
    model: str | None = None  # None: the embedded default model
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    # batch-1 decode again at each weight/KV dtype and thread count (threads past the usable
    # cores are left out): decode reads every weight each step, so half the bytes is faster
    precisions: tuple[str, ...] = ("float32", "float16")
    thread_counts: tuple[int, ...] = (1, 2)
    repeats: int = 5  # of each of those runs; the median is kept

    @property
    def block_size(self) -> int:
        return int(self.engine_kwargs.get("block_size", 16))


def measure_decode(llm: Any, batch_size: int, cfg: CpuBenchConfig) -> dict[str, Any]:
    """Greedy-decode `max_tokens` per sequence for `batch_size` sequences; return tokens/s."""
    from minirt import SamplingParams

    prompts = [DECODE_PROMPTS[i % len(DECODE_PROMPTS)] for i in range(batch_size)]
    params = SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens, ignore_eos=True)
    llm.generate(prompts, replace(params, max_tokens=cfg.warmup_tokens), use_tqdm=False)
    start = time.perf_counter()
    out = llm.generate(prompts, params, use_tqdm=False)
    wall_s = time.perf_counter() - start
    stats = llm.last_stats
    return {
        "name": "decode",
        "batch_size": batch_size,
        "max_tokens": cfg.max_tokens,
        "num_prompt_tokens": stats.num_prompt_tokens,
        "num_generated_tokens": stats.num_generated_tokens,
        "elapsed_s": stats.elapsed_s,
        "wall_s": wall_s,
        "tokens_per_s": stats.num_generated_tokens / stats.elapsed_s,
        "num_steps": stats.num_steps,
        "num_preemptions": stats.num_preemptions,
        "token_ids": out[0].token_ids,
    }


def measure_precisions(cfg: CpuBenchConfig) -> list[dict[str, Any]]:
    """Batch-1 decode tokens/s per (dtype, threads), the median of `repeats` runs, each beside
    what the dtype costs in accuracy: held-out nats/byte and how many greedy tokens agree with
    the first dtype's."""
    from minirt.quant.accuracy import held_out_text, nats_per_byte
    from minirt.threads import usable_cores

    rows, first_tokens = [], None
    text = held_out_text(1000)
    for dtype in cfg.precisions:
        for threads in sorted({min(t, usable_cores()) for t in cfg.thread_counts}):
            llm = make_llm(replace(cfg, engine_kwargs={**cfg.engine_kwargs, "dtype": dtype,
                                                       "cpu_threads": threads}))  # fmt: skip
            runs = sorted((measure_decode(llm, 1, cfg) for _ in range(cfg.repeats)),
                          key=lambda r: r["tokens_per_s"])  # fmt: skip
            row = runs[len(runs) // 2]  # the median run: one short run is at the host's mercy
            tokens = row.pop("token_ids")
            first_tokens = first_tokens or tokens
            agree = sum(a == b for a, b in zip(tokens, first_tokens, strict=True))
            rows.append({**row, "name": "decode_precision", "dtype": dtype, "threads": threads,
                         "nats_per_byte": nats_per_byte(llm, text),
                         "greedy_agreement": agree / len(tokens)})  # fmt: skip
    return rows


def measure_prefix_cache(llm: Any, cfg: CpuBenchConfig) -> dict[str, Any]:
    """Serve the shared prefix once, then `prefix_prompts` requests that extend it; hit rate."""
    from minirt import SamplingParams

    # The first request is the prefix alone: it fills the cache, and its prompt length tells us
    # the prefix's token count through the public API.
    llm.generate([SHARED_PREFIX], SamplingParams(temperature=0.0, max_tokens=1), use_tqdm=False)
    prefix_tokens = llm.last_stats.num_prompt_tokens
    prompts = [
        SHARED_PREFIX + f"def {SUFFIX_NAMES[i % len(SUFFIX_NAMES)]}_{i}(items: list[Item]):\n"
        for i in range(cfg.prefix_prompts)
    ]
    params = SamplingParams(temperature=0.0, max_tokens=cfg.prefix_max_tokens, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)
    stats = llm.last_stats
    best = best_possible_hits([SHARED_PREFIX, *prompts], llm.tokenizer, cfg.block_size)
    return {
        "name": "prefix_cache",
        "num_prompts": cfg.prefix_prompts,
        "block_size": cfg.block_size,
        "shared_prefix_tokens": prefix_tokens,
        "shared_prefix_blocks": prefix_tokens // cfg.block_size,
        "num_prompt_tokens": stats.num_prompt_tokens,
        "num_cached_tokens": stats.num_cached_tokens,
        "hit_rate": stats.prefix_cache_hit_rate,
        "best_hit_rate": best / stats.num_prompt_tokens,
        "elapsed_s": stats.elapsed_s,
    }


def best_possible_hits(prompts: list[str], tokenizer: Any, block_size: int) -> int:
    """Hit tokens of prompts[1:] with an unbounded cache: a full block hits when an earlier
    prompt had the same chain hash (only full blocks are shared; the last token never hits)."""
    from minirt.kv import block_hash

    seen: set[int] = set()
    hits = 0
    for n, text in enumerate(prompts):
        ids, parent = tokenizer.encode(text), None
        for i in range((len(ids) - 1) // block_size):
            parent = block_hash(parent, ids[i * block_size : (i + 1) * block_size])
            hits += block_size * (n > 0 and parent in seen)
            seen.add(parent)
    return hits


def make_llm(cfg: CpuBenchConfig) -> Any:
    """The engine under test: on the CPU even where CUDA exists, prefix caching on."""
    from minirt import LLM

    kwargs = {"block_size": cfg.block_size, "prefix_cache": "hash", "device": "cpu"}
    kwargs.update(cfg.engine_kwargs)
    return LLM(cfg.model, **kwargs) if cfg.model else LLM(**kwargs)


def measure(cfg: CpuBenchConfig, progress: bool = True, llm: Any = None) -> list[dict[str, Any]]:
    """Run every measurement of the CPU benchmark on one engine; return the result rows.

    `llm` defaults to `make_llm(cfg)`; pass your own to measure an engine you configured.
    """
    bar = tqdm(total=len(cfg.batch_sizes) + 3, desc="loading model", disable=not progress)
    llm = llm if llm is not None else make_llm(cfg)
    bar.update()
    rows = []
    for batch_size in cfg.batch_sizes:
        bar.set_description(f"decode, batch {batch_size}")
        rows.append(measure_decode(llm, batch_size, cfg))
        del rows[-1]["token_ids"]
        bar.update()
    decode = [r for r in rows if r["name"] == "decode"]
    if len(decode) >= 2:
        low, high = decode[0], decode[-1]
        rows.append(
            {
                "name": "decode_batch_ratio",
                "batch_sizes": [high["batch_size"], low["batch_size"]],
                "ratio": high["tokens_per_s"] / low["tokens_per_s"],
            }
        )
    bar.set_description("shared-prefix workload")
    rows.append(measure_prefix_cache(llm, cfg))
    bar.update()
    bar.set_description("batch 1 per dtype and threads")
    rows += measure_precisions(cfg)
    bar.update()
    bar.close()
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    """The results as a few human-readable lines."""
    lines = []
    for r in rows:
        if r["name"] == "decode":
            lines.append(
                f"decode  batch {r['batch_size']:>3}: {r['tokens_per_s']:8.1f} tokens/s "
                f"({r['num_generated_tokens']} tokens in {r['elapsed_s']:.2f} s, "
                f"{r['num_preemptions']} preemptions)"
            )
        elif r["name"] == "decode_batch_ratio":
            high, low = r["batch_sizes"]
            lines.append(f"batch {high} / batch {low}: {r['ratio']:.1f}x tokens/s")
        elif r["name"] == "decode_precision":
            lines.append(
                f"batch 1, {r['dtype']:>8}, {r['threads']} thread(s): {r['tokens_per_s']:6.1f} "
                f"tokens/s, {r['nats_per_byte']:.4f} nats/byte held out, "
                f"{r['greedy_agreement']:.0%} of its greedy tokens those of the first row"
            )
        elif r["name"] == "prefix_cache":
            lines.append(
                f"prefix cache: hit rate {r['hit_rate']:.1%} "
                f"(best possible {r['best_hit_rate']:.1%}), {r['num_prompts']} prompts "
                f"sharing a {r['shared_prefix_tokens']}-token prefix"
            )
    return "\n".join(lines)


def run(
    cfg: CpuBenchConfig | None = None,
    out_dir: str | Path = DEFAULT_OUT,
    command: str | None = None,
    progress: bool = True,
    llm: Any = None,
) -> Path:
    """Measure, write `<out_dir>/cpu/engine-<date>.json`, and return its path."""
    cfg = cfg or CpuBenchConfig()
    rows = measure(cfg, progress=progress, llm=llm)
    config = {**asdict(cfg), "batch_sizes": list(cfg.batch_sizes)}
    return write_results(TOPIC, "cpu", rows, out_dir=out_dir, command=command, config=config)


def add_parser(topics) -> None:
    p = topics.add_parser(
        "cpu",
        help="decode tokens/s at batch 1 vs 32 and the prefix-cache hit rate, on CPU",
        description="Decode tokens/s at two batch sizes (and their ratio) and the prefix-cache "
        "hit rate on a shared-prefix workload, with the embedded model on CPU. Writes "
        "OUT/cpu/engine-<date>.json.",
    )
    add_out(p, help=f"results folder (default: {DEFAULT_OUT})")
    p.add_argument(
        "--batch-sizes", type=int_list, default=(1, 32), help="comma-separated (default: 1,32)"
    )
    p.add_argument(
        "--max-tokens", type=int, default=64, help="decode tokens per sequence (default: 64)"
    )
    p.add_argument(
        "--prefix-prompts", type=int, default=16, help="prompts sharing the prefix (default: 16)"
    )
    p.add_argument(
        "--model", default=None, help="a Hugging Face checkpoint folder (default: embedded)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: the engine's choice)"
    )
    add_no_progress(p)


def config_of(args) -> CpuBenchConfig:
    """The command line as a config; --threads goes to the engine (`cpu_threads`): a
    torch.set_num_threads before LLM() would be undone by the engine's own choice."""
    return CpuBenchConfig(
        batch_sizes=args.batch_sizes,
        max_tokens=args.max_tokens,
        prefix_prompts=args.prefix_prompts,
        model=args.model,
        engine_kwargs={"cpu_threads": args.threads} if args.threads else {},
    )


def main(args, command: str) -> Path:
    path = run(config_of(args), out_dir=args.out, command=command, progress=progress(args))
    print(summary(load_results(path)["results"]))
    return path
