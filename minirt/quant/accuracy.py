"""What quantization costs in accuracy: perplexity on held-out text, method by method.

`accuracy_table` scores the same held-out text at full precision and under each method of
`minirt.quant.linear.METHODS` (quantize the decoder's projections, score, put the full-precision
layers back), so the rows differ in the number format only. Perplexity is per byte (the embedded
model's tokens are bytes). Rounding activations makes a score chaotic: a last-bit change upstream
(another CPU's vector kernels) flips a few roundings, and by the last layer the noise is redrawn.
`draws` re-scores under `nudged` inputs to measure that spread. Notebook 08 and the dashboard.
"""

from __future__ import annotations

import math
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minirt.quant.linear import (
    _causal_lm,
    collect_act_amax,
    get_method,
    quantize_model,
    target_linears,
)

FULL_PRECISION = "full"  # the accuracy table's name for the unquantized model
DEFAULT_METHODS = ("w4a16-g128", "w4a16-g32", "fp8-dynamic", "fp8-static", "int8", "int8-smooth")


def stdlib_text(relative_path: str, num_bytes: int) -> str:
    """The first `num_bytes` of a file of this Python's standard library, as text.

    The embedded model was trained on the stdlib: `codecs.py` is in its held-out split
    (minirt/model/embedded/corpus_manifest.json lists `val_files`), `textwrap.py` in training.
    """
    path = Path(sysconfig.get_paths()["stdlib"]) / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass your own text instead")
    return path.read_bytes()[:num_bytes].decode("utf-8", "ignore")


def held_out_text(num_bytes: int = 2000) -> str:
    """codecs.py's first bytes: text of the embedded model's kind that it never trained on."""
    return stdlib_text("codecs.py", num_bytes)


def calibration_text(num_bytes: int = 1000) -> str:
    """textwrap.py's first bytes: typical (training-split) input, to calibrate static scales."""
    return stdlib_text("textwrap.py", num_bytes)


@torch.no_grad()
def nats_per_byte(llm, text: str | list[int], window: int | None = None) -> float:
    """Mean next-token cross-entropy of `text` under `llm`, scored in windows that fit the
    model (each window is a fresh prompt; default: max_model_len - 1 tokens)."""
    toks = llm.tokenizer.encode(text) if isinstance(text, str) else list(text)
    window = window or llm.max_model_len - 1
    total, count = 0.0, 0
    for start in range(0, len(toks) - 1, window):
        chunk = toks[start : start + window]
        if len(chunk) < 2:
            break
        logits = llm.score(chunk)  # [len(chunk), vocab]
        target = torch.tensor(chunk[1:])
        total += F.cross_entropy(logits[:-1], target, reduction="sum").item()
        count += len(chunk) - 1
    if count == 0:
        raise ValueError("text is too short to score: it needs at least two tokens")
    return total / count


@contextmanager
def quantized(llm, method: str, calibration: Iterable[str | list[int]] | None = None) -> Iterator:
    """`with quantized(llm, "int8"):` — the model quantized inside the block, restored after."""
    model = _causal_lm(llm)
    originals = target_linears(model)
    needs = get_method(method).needs_calibration
    quantize_model(llm, method, calibration if needs else None)
    try:
        yield model
    finally:
        for name, linear in originals.items():
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, linear)
        if hasattr(llm, "capture_graphs"):  # CUDA graphs recorded the quantized layers
            llm.capture_graphs()


@contextmanager
def nudged(llm, k: int, ppm: float = 1.0) -> Iterator:
    """`with nudged(llm, 2):` — the token embeddings' output channels scaled by 1 + 2 ppm and
    1 - 2 ppm in turn, in the block.

    A change in the last bits, as another CPU's vector kernels make (k = 0 changes nothing). A
    score whose rounding of activations amplifies it moves by as much as it would on that CPU.
    (Not one factor for every channel: the first RMSNorm undoes a plain scale, often exactly.)
    """
    embed = _causal_lm(llm).model.embed_tokens
    signs = torch.ones(embed.embedding_dim, device=embed.weight.device)
    signs[1::2] = -1
    factor = 1.0 + k * ppm * 1e-6 * signs
    handle = embed.register_forward_hook(lambda module, args, out: out * factor) if k else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


@dataclass
class AccuracyRow:
    """One method on the held-out text: nats/byte, perplexity (e^nats) and both vs full, each
    the mean over the draws it was scored in; `ratio_spread` is max - min of its draws' ratios."""

    method: str
    nats_per_byte: float
    perplexity: float
    ratio: float  # nats_per_byte / full precision's
    delta_ppl: float  # perplexity - full precision's
    ratio_spread: float = 0.0  # 0 when scored once (one draw, or weights-only rounding)
    draws: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def accuracy_table(
    llm,
    held_out: str | None = None,
    calibration: Sequence[str | list[int]] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    draws: int = 1,
) -> list[AccuracyRow]:
    """Full precision first, then each method, on the same `held_out` text (default:
    `held_out_text()`); `calibration` prompts (default: `calibration_text()`) feed the methods
    that need activation ranges (fp8-static, int8-smooth).

    draws > 1 scores full precision and the methods that round activations again under
    `nudged(llm, k)`, k = 1 .. draws - 1, each against the full precision of its own draw.
    Weights-only methods are scored once: their rounding happens offline, on fixed weights.
    """
    if draws < 1:
        raise ValueError(f"draws is {draws}; pass 1 (score once) or more")
    held_out = held_out_text() if held_out is None else held_out
    calibration = [calibration_text()] if calibration is None else list(calibration)
    for m in methods:
        get_method(m)  # an unknown name fails before any scoring
    scores: dict[str, list[tuple[float, float]]] = {FULL_PRECISION: []}  # (nats, full's nats)
    scores |= {m: [] for m in methods}
    for k in range(draws):
        with nudged(llm, k):
            base = nats_per_byte(llm, held_out)
            scores[FULL_PRECISION].append((base, base))
            for m in methods:
                if k > 0 and get_method(m).activations == "none":
                    continue
                with quantized(llm, m, calibration):
                    scores[m].append((nats_per_byte(llm, held_out), base))
    full = _mean([s for s, _ in scores[FULL_PRECISION]])
    rows = []
    for m, pairs in scores.items():
        nats, ratios = _mean([s for s, _ in pairs]), [s / b for s, b in pairs]
        ppl = math.exp(nats)
        spread = max(ratios) - min(ratios)
        row = AccuracyRow(m, nats, ppl, _mean(ratios), ppl - math.exp(full), spread, len(pairs))
        rows.append(row)
    return rows


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


@torch.no_grad()
def range_overshoot(
    llm, calibration: Sequence[str | list[int]], text: str | list[int]
) -> dict[str, float]:
    """Per decoder projection: max |x| on `text` / max |x| on `calibration`.

    A static FP8 scale is the calibration's max / 448; an overshoot above 1 means `text`'s
    inputs clip at that scale (by that factor, at worst). This, not "off-distribution" as such,
    is what a bad calibration set costs: one that covers the real range does fine.
    """
    model = _causal_lm(llm)
    linears = target_linears(model)
    cal = collect_act_amax(model, linears, lambda: [llm.score(c) for c in calibration])
    real = collect_act_amax(model, linears, lambda: llm.score(text))
    return {n: (real[n].max() / cal[n].max().clamp(min=1e-12)).item() for n in linears}
