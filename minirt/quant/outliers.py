"""Why activations are harder to quantize than weights: outlier statistics per linear layer.

One scale has to cover every value of its unit: a token's row of activations (per-token dynamic
quantization), a weight's output row or group. If a few entries are 20x the typical one, the scale
follows them and the typical values land on a handful of codes. `activation_outliers` measures
that spread — max / median |value| per input channel and per token — for the input of every
decoder projection and for its weight, plus the INT8 round-trip error of each.
`planted_outlier_channels` gives the model the systematic outlier channels of large LLMs without
changing what it computes. Notebook 08.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from minirt.quant import formats as F
from minirt.quant.linear import _causal_lm, target_linears

_TINY = 1e-12


@dataclass
class SpreadStats:
    """The spread of |values| of one tensor [rows, channels] (activations: rows are tokens;
    weights: rows are output features, channels the input features they read).

    channel_amax: [channels] max |x| over rows. channel_ratio: its max / its median — how far the
    outlier channels stand above the typical one. row_ratio: per row, max / median |x| — the range
    one per-row scale must span; `row_ratio_median` and `row_ratio_max` summarise it over rows.
    int8_rel_error: relative Frobenius error of a symmetric per-row INT8 round trip (what W8A8
    does to each side: per-token activations, per-output-channel weights).
    """

    channel_amax: list[float]
    channel_ratio: float
    row_ratio_median: float
    row_ratio_max: float
    amax: float
    int8_rel_error: float

    @classmethod
    def of(cls, x: torch.Tensor) -> SpreadStats:
        x = x.detach().float()  # [rows, channels]
        a = x.abs()
        channel_amax = a.amax(0)  # [channels]
        row_ratio = a.amax(1) / a.median(1).values.clamp(min=_TINY)  # [rows]
        codes, scales = F.quantize_int8_rows(x)
        err = (codes.float() * scales[:, None] - x).norm() / x.norm().clamp(min=_TINY)
        return cls(
            channel_amax=channel_amax.tolist(),
            channel_ratio=(channel_amax.max() / channel_amax.median().clamp(min=_TINY)).item(),
            row_ratio_median=row_ratio.median().item(),
            row_ratio_max=row_ratio.max().item(),
            amax=a.max().item(),
            int8_rel_error=err.item(),
        )

    def to_dict(self) -> dict:
        return {
            "channel_amax": self.channel_amax,
            "channel_ratio": self.channel_ratio,
            "row_ratio_median": self.row_ratio_median,
            "row_ratio_max": self.row_ratio_max,
            "amax": self.amax,
            "int8_rel_error": self.int8_rel_error,
        }


@dataclass
class LayerStats:
    """One projection: its name, shape, token count, and the spread of its input and weight."""

    name: str  # e.g. "model.layers.0.mlp.down_proj"
    in_features: int
    out_features: int
    num_tokens: int
    activation: SpreadStats  # of the input x [tokens, in]
    weight: SpreadStats  # of W [out, in]

    @property
    def short_name(self) -> str:
        """ "L0 down_proj": the layer index and the projection, for plot labels."""
        parts = self.name.split(".")
        i = parts.index("layers") + 1 if "layers" in parts else 0
        return f"L{parts[i]} {parts[-1]}" if i else self.name

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "short_name": self.short_name,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "num_tokens": self.num_tokens,
            "activation": self.activation.to_dict(),
            "weight": self.weight.to_dict(),
        }


@torch.no_grad()
def activation_outliers(llm, texts: Iterable[str | list[int]]) -> list[LayerStats]:
    """Run `texts` through `llm` (an `LLM`; each text scored as one prompt) and return the
    spread statistics of every decoder projection's input and weight, in model order.

    Activations are pooled over all texts' tokens. The model is left unchanged.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("activation_outliers needs at least one text to run through the model")
    model = _causal_lm(llm)
    linears = target_linears(model)
    if not linears:
        raise ValueError("found no decoder nn.Linear layers; is the model already quantized?")
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in linears}

    def hook_for(name: str):
        def hook(module: nn.Module, args) -> None:
            seen[name].append(args[0].detach().float().reshape(-1, module.in_features).cpu())

        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in linears.items()]
    try:
        for text in texts:
            llm.score(text)
    finally:
        for h in handles:
            h.remove()
    stats = []
    for name, linear in linears.items():
        x = torch.cat(seen[name])  # [tokens, in]
        stats.append(
            LayerStats(
                name=name,
                in_features=linear.in_features,
                out_features=linear.out_features,
                num_tokens=x.shape[0],
                activation=SpreadStats.of(x),
                weight=SpreadStats.of(linear.weight),
            )
        )
    return stats


@contextmanager
@torch.no_grad()
def planted_outlier_channels(llm, channels: Sequence[int], factor: float) -> Iterator[nn.Module]:
    """`with planted_outlier_channels(llm, [3, 77], 30):` — the same model, with outlier channels.

    In every decoder layer both RMSNorm weights are multiplied by `factor` on `channels` and the
    columns of the projections that read them (qkv, gate_up) are divided by it: each product
    w * x is unchanged, so the model computes the same function (up to fp32 rounding), but every
    token's input to those projections now has a few entries `factor` times larger — the fixed
    outlier channels that LLM.int8() (Dettmers et al., 2022) found in large models. Restored on
    exit. Quantize inside the block, not before: the planting edits full-precision weights.
    """
    model = _causal_lm(llm)
    idx = torch.as_tensor(list(channels), dtype=torch.long)
    edits = []  # (tensor, index, multiplier): norm weights [hidden], projection columns
    for layer in model.model.layers:
        attn = (layer.input_layernorm, layer.self_attn.qkv_proj)
        mlp = (layer.post_attention_layernorm, layer.mlp.gate_up_proj)
        for norm, proj in (attn, mlp):
            if not isinstance(proj, nn.Linear):  # a QuantLinear: its weight is codes now
                raise ValueError("the model is already quantized; plant the channels first")
            edits += [(norm.weight, (idx,), factor), (proj.weight, (slice(None), idx), 1 / factor)]
    saved = [t[i].clone() for t, i, _ in edits]
    for t, i, mult in edits:
        t[i] *= mult
    try:
        yield model
    finally:
        for (t, i, _), old in zip(edits, saved, strict=True):
            t[i] = old
