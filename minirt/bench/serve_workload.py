"""What a load generator sends and when: request lengths, shared prefixes, open-loop arrivals.

Lengths come from a named distribution or a workload file; prompts are token ids (the server
needs shapes, not meaning), optionally behind one of a few shared prefixes. Arrivals are open
loop: send times are drawn in advance and do not wait for answers, so a slow server meets a
growing queue, as it would in production. Gamma gaps with shape `burstiness` (1 = Poisson,
below 1 burstier, as in vLLM's benchmark). Notebook 03.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

# Log-normal fits (median, sigma, lo, hi) of ShareGPT conversation turns as vLLM's serving
# benchmark samples them: prompts average ~220 tokens and answers ~200, both long-tailed.
DISTRIBUTIONS = {
    "sharegpt": {"prompt": (110, 1.1, 4, 1024), "output": (120, 1.0, 4, 1024)},
    # The same shape shrunk to the embedded model (1,024-token context) and a CPU's speed.
    "sharegpt-small": {"prompt": (48, 0.8, 4, 256), "output": (24, 0.6, 2, 64)},
}


@dataclass
class RequestSpec:
    prompt: list[int]  # token ids
    max_tokens: int  # sent with ignore_eos, so the answer has exactly this many tokens

    def to_dict(self) -> dict:
        return {"prompt_len": len(self.prompt), "max_tokens": self.max_tokens}


@dataclass
class WorkloadSpec:
    """How to make requests: a named distribution (or fixed lengths) or a JSONL file."""

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


def _lengths(spec: WorkloadSpec, n: int, rng: random.Random) -> list[tuple[int, int]]:
    if spec.file is not None:
        rows = [json.loads(line) for line in Path(spec.file).read_text().splitlines() if line]
        if not rows:
            raise ValueError(f"{spec.file} has no requests; write one JSON object per line")
        try:
            pairs = [(int(r["prompt_len"]), int(r["output_len"])) for r in rows]
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{spec.file}: every line needs integer prompt_len and output_len"
            ) from None
        return [pairs[i % len(pairs)] for i in range(n)]
    if spec.distribution == "fixed":
        return [(spec.prompt_len, spec.output_len)] * n
    if spec.distribution not in DISTRIBUTIONS:
        names = ", ".join(["fixed", *DISTRIBUTIONS])
        raise ValueError(f"unknown distribution {spec.distribution!r}; pick one of {names}")
    d = DISTRIBUTIONS[spec.distribution]
    return [(_lognormal(rng, *d["prompt"]), _lognormal(rng, *d["output"])) for _ in range(n)]


def make_requests(spec: WorkloadSpec, n: int, variant: int = 0) -> list[RequestSpec]:
    """`n` requests, the same for the same spec (seeded). Each `variant` has the same lengths
    and shared prefixes but its own tokens after them, so a sweep's rates (and its warm-up) do
    not find each other's prompts in the prefix cache."""
    rng = random.Random(spec.seed)
    prefixes = [
        [rng.randrange(spec.vocab) for _ in range(spec.shared_prefix_len)]
        for _ in range(spec.num_prefixes)
    ]
    lengths = _lengths(spec, n, rng)
    tokens = random.Random(f"{spec.seed}/{variant}")
    requests = []
    for i, (prompt_len, output_len) in enumerate(lengths):
        own = [tokens.randrange(spec.vocab) for _ in range(max(1, prompt_len))]
        requests.append(RequestSpec(prefixes[i % len(prefixes)] + own, max(1, output_len)))
    return requests


def arrival_times(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Send times in seconds from the start: gamma gaps of mean 1/rate (rate=inf: all at 0)."""
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
