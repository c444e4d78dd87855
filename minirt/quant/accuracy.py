"""What quantization costs in accuracy: perplexity on held-out text, method by method.

`accuracy_table` scores the same held-out text at full precision and under each method of
`minirt.quant.linear.METHODS` (quantize the decoder's projections, score, put the full-precision
layers back), so the rows differ in the number format only. Perplexity is per byte (the embedded
model's tokens are bytes). Notebook 08 (quantization) and the Quantization dashboard page use it.
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


@dataclass
class AccuracyRow:
    """One method on the held-out text: nats/byte, perplexity (e^nats) and both vs full."""

    method: str
    nats_per_byte: float
    perplexity: float
    ratio: float  # nats_per_byte / full precision's
    delta_ppl: float  # perplexity - full precision's

    def to_dict(self) -> dict:
        return asdict(self)


def accuracy_table(
    llm,
    held_out: str | None = None,
    calibration: Sequence[str | list[int]] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
) -> list[AccuracyRow]:
    """Full precision first, then each method, on the same `held_out` text (default:
    `held_out_text()`); `calibration` prompts (default: `calibration_text()`) feed the methods
    that need activation ranges (fp8-static, int8-smooth)."""
    held_out = held_out_text() if held_out is None else held_out
    calibration = [calibration_text()] if calibration is None else list(calibration)
    for m in methods:
        get_method(m)  # an unknown name fails before any scoring
    scores = {FULL_PRECISION: nats_per_byte(llm, held_out)}
    for m in methods:
        with quantized(llm, m, calibration):
            scores[m] = nats_per_byte(llm, held_out)
    base = scores[FULL_PRECISION]
    return [
        AccuracyRow(m, s, math.exp(s), s / base, math.exp(s) - math.exp(base))
        for m, s in scores.items()
    ]


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
