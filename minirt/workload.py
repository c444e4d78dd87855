"""Seeded request sets: every notebook, benchmark and lab takes its requests from here.

A `Workload` is token-id prompts and how many tokens each request generates (greedy, with
`ignore_eos`, so exactly that many): what the scheduler does then depends only on the seed.
- Shared prefixes as real traffic has them: `few_shot`, `multi_turn`, `branching`, and
  `no_sharing` as the control; `standard` is the sched benchmark's four (notebook 11, lab 7).
- Slices of real text with uniform lengths: `mixed_requests` (notebooks 01-03).
- Lengths from a named distribution or a file behind shared prefixes (`WorkloadSpec`,
  `make_requests`) and open-loop `arrival_times`: `bench serve` (notebook 03); random tokens with
  uniform lengths: `uniform` (`bench gpu`'s offline run).
Random prompts are ids drawn from [0, vocab): a benchmark needs shapes, not meaning.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from minirt.sampling_params import SamplingParams


@dataclass
class Workload:
    name: str
    prompts: list[list[int]]  # token ids
    output_lens: list[int]  # tokens each request generates (ignore_eos)
    args: dict = field(default_factory=dict)  # the generator's arguments, for the JSON

    @property
    def prompt_lens(self) -> list[int]:
        return [len(p) for p in self.prompts]

    @property
    def num_prompt_tokens(self) -> int:
        return sum(self.prompt_lens)

    @property
    def max_tokens(self) -> int:
        """The longest answer (every answer's length where they are all equal)."""
        return max(self.output_lens)

    @property
    def params(self) -> list[SamplingParams]:
        """Greedy, exactly `output_lens[i]` tokens for request i: what `generate` takes."""
        return [
            SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in self.output_lens
        ]

    def to_dict(self) -> dict:
        sizes = {"num_requests": len(self.prompts), "num_prompt_tokens": self.num_prompt_tokens}
        return {"name": self.name, **sizes, "max_tokens": self.max_tokens, **self.args}


def _tokens(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(vocab) for _ in range(n)]


# ------------------------------------------------------------------------ shared prefixes
def few_shot(
    num_requests=32, num_groups=4, system_len=200, question_len=24, max_tokens=16, vocab=256, seed=0
) -> Workload:
    """A few long system prompts (with their examples); each request is one of them plus its
    own question, arriving interleaved."""
    rng = random.Random(seed)
    systems = [_tokens(rng, system_len, vocab) for _ in range(num_groups)]
    prompts = []
    for _ in range(num_requests):
        system = systems[rng.randrange(num_groups)]
        prompts.append(system + _tokens(rng, question_len, vocab))
    args = dict(num_groups=num_groups, system_len=system_len, question_len=question_len)
    return Workload("few_shot", prompts, [max_tokens] * num_requests, args | {"seed": seed})


def multi_turn(
    num_conversations=8, turns=4, turn_len=40, max_tokens=16, vocab=256, seed=0
) -> Workload:
    """Conversations: turn t resends the whole history, each earlier turn's user message and
    (recorded) reply."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(num_conversations):
        history: list[int] = []
        for _ in range(turns):
            history = history + _tokens(rng, turn_len, vocab)
            prompts.append(list(history))
            history = history + _tokens(rng, max_tokens, vocab)  # the reply, as sent back
    rng.shuffle(prompts)  # turns of many users arrive mixed
    args = dict(num_conversations=num_conversations, turns=turns, turn_len=turn_len, seed=seed)
    return Workload("multi_turn", prompts, [max_tokens] * len(prompts), args)


def branching(
    depth=3, fanout=3, root_len=100, segment_len=30, max_tokens=16, vocab=256, seed=0
) -> Workload:
    """Tree of thought: every node of a `fanout`-ary tree of segments below a root is one
    request (its path from the root)."""
    rng = random.Random(seed)
    level = [_tokens(rng, root_len, vocab)]
    prompts = list(level)
    for _ in range(depth):
        level = [p + _tokens(rng, segment_len, vocab) for p in level for _ in range(fanout)]
        prompts += level
    rng.shuffle(prompts)
    args = dict(depth=depth, fanout=fanout, root_len=root_len, segment_len=segment_len)
    return Workload("branching", prompts, [max_tokens] * len(prompts), args | {"seed": seed})


def no_sharing(like: Workload, vocab=256, seed=0) -> Workload:
    """Random prompts with the lengths of `like`'s: the control without shared prefixes."""
    rng = random.Random(seed)
    prompts = [_tokens(rng, len(p), vocab) for p in like.prompts]
    return Workload("no_sharing", prompts, list(like.output_lens), dict(like=like.name, seed=seed))


def standard(scale: int = 1, vocab: int = 256, seed: int = 0, length: int = 1) -> list[Workload]:
    """The sched benchmark's four workloads; `scale` multiplies the number of requests and
    `length` the prompts' parts (CUDA: 8 and 4). Caching a prefix saves its prefill; on a GPU a
    224-token prompt costs little next to 16 decode steps, so there the prompts are 4x longer
    (few-shot prompts of ~900 tokens, as 5-shot benchmarks have)."""
    shot = few_shot(
        num_requests=32 * scale,
        system_len=200 * length,
        question_len=24 * length,
        vocab=vocab,
        seed=seed,
    )
    return [
        shot,
        multi_turn(num_conversations=8 * scale, turn_len=40 * length, vocab=vocab, seed=seed),
        branching(
            fanout=3 if scale == 1 else 4,
            root_len=100 * length,
            segment_len=30 * length,
            vocab=vocab,
            seed=seed,
        ),
        no_sharing(shot, vocab=vocab, seed=seed),
    ]


# ------------------------------------------------------------------------ slices of real text
# A snapshot of minirt's block manager source, kept as data: prompts cut from the code itself
# would change whenever a comment there does, and with them every benchmark's requests.
_SOURCE = Path(__file__).resolve().parent / "data" / "prompt_text.txt"


def source_tokens(tokenizer) -> list[int]:
    """A few thousand tokens of real text (Python source) to slice prompts from."""
    return tokenizer.encode(_SOURCE.read_text())


def mixed_requests(
    tokenizer,
    num_requests: int,
    prompt_lens: tuple[int, int],
    output_lens: tuple[int, int],
    seed: int = 0,
) -> Workload:
    """`num_requests` slices of `source_tokens`, lengths uniform in the inclusive [lo, hi]
    ranges: exact lengths in tokens, on real text."""
    g = torch.Generator().manual_seed(seed)
    text = source_tokens(tokenizer)
    if prompt_lens[1] >= len(text):
        raise ValueError(f"prompts up to {prompt_lens[1]} tokens need a longer source text")

    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    prompts, outs = [], []
    for _ in range(num_requests):
        n = draw(*prompt_lens)
        start = draw(0, len(text) - n)
        prompts.append(text[start : start + n])
        outs.append(draw(*output_lens))
    args = dict(prompt_lens=list(prompt_lens), output_lens=list(output_lens), seed=seed)
    return Workload("mixed", prompts, outs, args)


# ------------------------------------------------------------------------ random lengths


def uniform(num_requests=256, lo=100, hi=1024, vocab=256, seed=0) -> Workload:
    """Random tokens; prompt and output lengths uniform in [lo, hi] (`bench gpu`'s offline run)."""
    rng = random.Random(seed)
    prompts, outs = [], []
    for _ in range(num_requests):
        prompts.append(_tokens(rng, rng.randint(lo, hi), vocab))
        outs.append(rng.randint(lo, hi))
    args = dict(lo=lo, hi=hi, seed=seed)
    return Workload("uniform", prompts, outs, args)


# Log-normal fits (median, sigma, lo, hi) of ShareGPT conversation turns as vLLM's serving
# benchmark samples them: prompts average ~220 tokens and answers ~200, both long-tailed.
DISTRIBUTIONS = {
    "sharegpt": {"prompt": (110, 1.1, 4, 1024), "output": (120, 1.0, 4, 1024)},
    # The same shape shrunk to the embedded model (1,024-token context) and a CPU's speed.
    "sharegpt-small": {"prompt": (48, 0.8, 4, 256), "output": (24, 0.6, 2, 64)},
}


@dataclass
class WorkloadSpec:
    """How `make_requests` makes requests: a named distribution (or fixed lengths) or a JSONL
    file, optionally behind shared prefixes."""

    distribution: str = "sharegpt-small"  # a DISTRIBUTIONS name, or "fixed"
    prompt_len: int = 64  # with "fixed"
    output_len: int = 32  # with "fixed"
    file: str | None = None  # JSONL lines of {"prompt_len", "output_len"}
    shared_prefix_len: int = 0  # tokens every prompt starts with (one of num_prefixes)
    num_prefixes: int = 1
    vocab: int = 256  # token ids drawn from [0, vocab)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _lognormal(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return min(hi, max(lo, round(math.exp(rng.gauss(math.log(median), sigma)))))


def _file_lengths(file: str, n: int) -> list[tuple[int, int]]:
    rows = [json.loads(line) for line in Path(file).read_text().splitlines() if line]
    if not rows:
        raise ValueError(f"{file} has no requests; write one JSON object per line")
    try:
        pairs = [(int(r["prompt_len"]), int(r["output_len"])) for r in rows]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{file}: every line needs integer prompt_len and output_len") from None
    return [pairs[i % len(pairs)] for i in range(n)]


def _lengths(spec: WorkloadSpec, n: int, rng: random.Random) -> list[tuple[int, int]]:
    if spec.file is not None:
        return _file_lengths(spec.file, n)
    if spec.distribution == "fixed":
        return [(spec.prompt_len, spec.output_len)] * n
    if spec.distribution not in DISTRIBUTIONS:
        names = ", ".join(["fixed", *DISTRIBUTIONS])
        raise ValueError(f"unknown distribution {spec.distribution!r}; pick one of {names}")
    d = DISTRIBUTIONS[spec.distribution]
    return [(_lognormal(rng, *d["prompt"]), _lognormal(rng, *d["output"])) for _ in range(n)]


def make_requests(spec: WorkloadSpec, n: int, variant: int = 0) -> Workload:
    """`n` requests, the same for the same spec (seeded). Each `variant` has the same lengths
    and shared prefixes but its own tokens after them, so a sweep's rates (and its warm-up) do
    not find each other's prompts in the prefix cache."""
    rng = random.Random(spec.seed)
    prefixes = [_tokens(rng, spec.shared_prefix_len, spec.vocab) for _ in range(spec.num_prefixes)]
    lengths = _lengths(spec, n, rng)
    tokens = random.Random(f"{spec.seed}/{variant}")
    prompts, outs = [], []
    for i, (prompt_len, output_len) in enumerate(lengths):
        own = _tokens(tokens, max(1, prompt_len), spec.vocab)
        prompts.append(prefixes[i % len(prefixes)] + own)
        outs.append(max(1, output_len))
    name = "file" if spec.file is not None else spec.distribution
    return Workload(name, prompts, outs, spec.to_dict() | {"variant": variant})


def arrival_times(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Open-loop send times in seconds from the start, drawn in advance (a slow server meets a
    growing queue, as in production): gamma gaps of mean 1/rate and shape `burstiness` (1 =
    Poisson, below 1 burstier, as in vLLM's benchmark); rate=inf sends all at 0."""
    if burstiness <= 0:
        raise ValueError(f"burstiness must be > 0 (1 = Poisson), got {burstiness}")
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s (inf = all at once), got {rate}")
    if math.isinf(rate):
        return [0.0] * n
    rng = random.Random(seed)
    t, times = 0.0, []
    for _ in range(n):
        times.append(t)
        t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
    return times
