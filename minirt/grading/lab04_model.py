"""Lab 4, task 5: the learner's INT4 inside every quantized layer of the embedded draft model.

Each case scores a short held-out text (a slice of codecs.py, which the model never trained on)
twice, one token per step so that every projection is a GEMV: once quantized with the learner's
quantizer and packing and multiplied by the learner's Triton GEMV in Triton's interpreter
(`int4_method`: minirt.quant.linear's plug point), once with minirt's own W4A16 method of the same
group size and symmetry. The two runs quantize the same weights the same way, so their
perplexities must agree closely; the learner's kernel must be launched once per quantized-linear
call (a PyTorch fallback, even in some layers only, is caught). The worker plays the learner's
side (`run` on the learner's method) and sends the log-probs, the counts and the packed weights;
the parent runs minirt's side and compares (`compare`), naming the first layer whose weights
differ, or the kernel if none does.
"""

from __future__ import annotations

import math
import random

import torch

from minirt.grading.core import Mismatch
from minirt.quant import formats as F

# minirt's methods the cases use, by (group_size, symmetric); the draft's projections take 128
# or 384 inputs, so both group sizes divide them.
METHODS = {(32, True): "w4a16-g32", (128, False): "w4a16-g128-asym"}
NUM_TOKENS = 8  # scored tokens per case: 12 quantized layers, a launch each per token

# Both runs quantize the same weights to the same codes (a code on an exact rounding tie may go
# either way), so the only difference left is the order in which the kernel sums its fp32
# products, ~1e-7 relative per output; through 3 layers that moves a token's log-prob by ~1e-6
# (the notebook's solution: perplexities within 1.2e-6 of minirt's over 16 cases, seeds 0-7).
# A thousandth of the perplexity is far above that noise and far below what INT4 itself costs
# the model (g32: +25 % over fp32 on the notebook's text): one wrong scale or nibble costs more.
PPL_RTOL = 1e-3


def draw(rng: random.Random, i: int) -> dict:
    """Case `i`: a slice of the held-out text and a method (symmetric g32, asymmetric g128)."""
    from minirt.quant.accuracy import held_out_text

    text = held_out_text(3000)
    start = rng.randrange(len(text) - NUM_TOKENS)
    group_size, symmetric = list(METHODS)[i % len(METHODS)]
    return {"text": text[start : start + NUM_TOKENS], "group_size": group_size, "sym": symmetric}


def run(quantization, case: dict) -> dict:
    """Score the case's text on the draft quantized by `quantization` (a method name or an
    `int4_method`), one token per step: each token's log-prob, the quantized-linear calls (and
    the rows they took), and every quantized layer's weights in GPTQ's order."""
    from minirt import LLM  # the engine, only for this task
    from minirt.quant.linear import QuantLinear

    llm = LLM(
        "draft",
        device="cpu",
        quantization=quantization,
        max_num_batched_tokens=1,
        kv_cache_bytes=2**20,
    )
    layers = {n: m for n, m in llm.model.named_modules() if isinstance(m, QuantLinear)}
    calls = {"calls": 0, "rows": 0}

    def count(module, args):
        calls["calls"] += 1
        calls["rows"] += args[0].numel() // module.in_features

    hooks = [m.register_forward_pre_hook(count) for m in layers.values()]
    try:
        toks = llm.tokenizer.encode(case["text"])
        logits = llm.score(toks)  # [tokens, vocab]
    finally:
        for h in hooks:
            h.remove()
    logprobs = torch.log_softmax(logits[:-1].float(), -1)
    picked = logprobs.gather(1, torch.tensor(toks[1:])[:, None])[:, 0]  # [tokens - 1]
    return {"logprobs": picked.tolist(), **calls, "weights": _weights(layers, quantization)}


def _weights(layers: dict, quantization) -> dict:
    """{layer: (packed [out, in // 8] in GPTQ's order, scales, zeros or None)} as stored."""
    out = {}
    for name, layer in layers.items():
        zeros = getattr(layer, "zeros", None)
        packed = layer.qweight
        if isinstance(quantization, str):  # minirt's own: stored in its kernel's order
            packed = F.pack_int4(F.int4_codes(layer.int4_weight()))
        out[name] = (packed, layer.scales, zeros)
    return out


def compare(got: dict, want: dict, case: dict) -> None:
    kind = "symmetric" if case["sym"] else "asymmetric"
    about = (
        f"the draft model quantized with your functions ({kind}, group_size "
        f"{case['group_size']}), scoring {case['text']!r} one token per step"
    )
    size = len(case["text"])
    if got["calls"] != want["calls"]:
        raise Mismatch(
            f"{about}: {got['calls']} quantized-linear calls; minirt's model makes {want['calls']}",
            size,
        )
    if got["launches"] != got["rows"]:  # one token per step: as many rows as calls
        raise Mismatch(
            f"{about}: w4a16_gemv_kernel was launched {got['launches']} times for "
            f"{got['calls']} quantized-linear calls of {got['rows']} token rows, each row one "
            "GEMV; the task grades your Triton kernel, so every row must launch it once (a "
            "PyTorch fallback, or one on some shapes only, computes the layer some other way)",
            size,
        )
    ppl, ref = _perplexity(got["logprobs"]), _perplexity(want["logprobs"])
    if abs(ppl / ref - 1) <= PPL_RTOL:
        return
    head = (
        f"{about}: perplexity {ppl:.4f}, minirt's INT4 {ref:.4f} (allowed: within "
        f"{PPL_RTOL:.1%}){_worst_token(got['logprobs'], want['logprobs'], case['text'])}"
    )
    for name, mine in got["weights"].items():
        diff = _weight_difference(mine, want["weights"][name], case)
        if diff:
            raise Mismatch(f"{head}; layer {name}: {diff}", size)
    raise Mismatch(
        f"{head}; your packed weights, scales and zero points are minirt's in every layer, so "
        "the difference is made by w4a16_gemv on the model's shapes (128 or 384 inputs, up to "
        f"768 rows, {len(case['text'])} tokens of one row each)",
        size,
    )


def _perplexity(logprobs: list[float]) -> float:
    return math.exp(-sum(logprobs) / len(logprobs))


def _worst_token(got: list[float], want: list[float], text: str) -> str:
    j = max(range(len(want)), key=lambda j: abs(got[j] - want[j]))
    data = text.encode()  # the embedded model's tokens are bytes
    return (
        f"; the token that differs most, {data[j + 1 : j + 2]!r} after {data[: j + 1]!r}: "
        f"log-prob {got[j]:.4f}, minirt's {want[j]:.4f}"
    )


def _weight_difference(mine: tuple, ref: tuple, case: dict) -> str:
    """What differs between a layer's stored INT4 weights and minirt's, or '' (ties allowed)."""
    (packed, scales, zeros), (ref_packed, ref_scales, ref_zeros) = mine, ref
    pairs = [("packed", packed, ref_packed), ("scales", scales, ref_scales)]
    if ref_zeros is not None:
        pairs.append(("zeros", zeros, ref_zeros))
    for what, t, r in pairs:
        if not isinstance(t, torch.Tensor) or t.shape != r.shape:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            return f"{what} is {shape}; minirt's is {tuple(r.shape)}"
    close = torch.isclose(scales.float(), ref_scales, rtol=1e-5, atol=0)
    if not close.all():
        r, g = (int(v) for v in (~close).nonzero()[0])
        return (
            f"scales[{r}, {g}] is {scales[r, g].item():.6g}, minirt's {ref_scales[r, g].item():.6g}"
        )
    if ref_zeros is not None and not torch.equal(zeros.long(), ref_zeros.long()):
        r, g = (int(v) for v in (zeros.long() != ref_zeros.long()).nonzero()[0])
        return f"zeros[{r}, {g}] is {int(zeros[r, g])}, minirt's {int(ref_zeros[r, g])}"
    codes = F.unpack_int4(packed.to(torch.int32)).long()  # [out, in], as the GEMV reads them
    ref_codes = F.unpack_int4(ref_packed).long()
    diff = codes - ref_codes
    if diff.abs().max() <= 1 and (diff != 0).float().mean() < 1e-3:  # rounding ties, at most
        return ""
    r, c = (int(v) for v in diff.nonzero()[0])
    where = (
        f"the code of column {c} in row {r} (nibble {c % 8} of word {c // 8}) is "
        f"{int(codes[r, c])}, minirt's {int(ref_codes[r, c])}"
    )
    flipped = F.pack_int4(ref_codes.reshape(-1, 8).flip(-1).reshape(ref_codes.shape))
    if torch.equal(packed.to(torch.int32), flipped):
        return f"{where}: your nibbles run the other way (k = 0 is the lowest nibble)"
    common = int(diff[diff != 0].mode().values)
    if (diff == common).float().mean() > 0.5:
        return f"{where}: most of your codes are {common:+d} off minirt's (the zero point?)"
    return f"{where} (quantize_int4, then pack_int4: GPTQ's order)"
