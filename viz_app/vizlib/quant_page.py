"""Quantization, drawn: a layer's weights on their grid, error against bits and group size,
activation outliers per layer, and the measured speed crossover.

The weights and activations are the embedded target's (`minirt.quant.grid` rounds them,
`minirt.quant.outliers.activation_outliers` measures them); the speeds come from the newest
committed `bench/results/*/quant-*.json` (`python -m minirt.bench quant`). Everything here is data
shaping and drawing. Notebook 08 (quantization), lab 4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import torch

from minirt.quant import formats as F
from minirt.quant.grid import fake_quant_groups, grid_levels, relative_error
from minirt.tools.results import find_results, results_root

BITS = tuple(range(2, 9))
GROUP_SIZES = (32, 64, 128)  # and "row": one group per output row
ROW = "row"
BENCH_COMMAND = "python -m minirt.bench quant"


# ------------------------------------------------------------------ the weight grid
def group_size_of(choice: int | str, in_features: int) -> int:
    """The group size a sidebar choice stands for ("row": the whole input dimension)."""
    return in_features if choice == ROW else int(choice)


def worst_group(w: torch.Tensor, group_size: int) -> tuple[int, int]:
    """(row, group) holding the layer's largest |w|: the group an outlier stretches most."""
    r, c = divmod(int(w.abs().argmax()), w.shape[1])
    return r, c // group_size


def group_frame(
    w: torch.Tensor, bits: int, group_size: int, symmetric: bool, row: int, group: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, levels) of one group: its weights and what they round to, and its grid."""
    cols = slice(group * group_size, (group + 1) * group_size)
    w_hat = fake_quant_groups(w, bits, group_size, symmetric)
    values = pd.DataFrame({"w": w[row, cols].float().numpy(), "rounded": w_hat[row, cols].numpy()})
    levels = grid_levels(w, bits, group_size, symmetric, row, group).numpy()
    used = set(values["rounded"].round(9))
    return values, pd.DataFrame({"level": levels, "used": [round(v, 9) in used for v in levels]})


def grid_chart(values: pd.DataFrame, levels: pd.DataFrame) -> alt.LayerChart:
    """A histogram of the group's weights with its quantization levels as vertical rules."""
    lo = float(min(values["w"].min(), levels["level"].min()))
    hi = float(max(values["w"].max(), levels["level"].max()))
    x = alt.X("w:Q", bin=alt.Bin(extent=[lo, hi], maxbins=80), title="weight value")
    hist = alt.Chart(values).mark_bar(opacity=0.7).encode(x=x, y=alt.Y("count()", title="weights"))
    rules = (
        alt.Chart(levels)
        .mark_rule(strokeDash=[3, 2])
        .encode(
            x="level:Q",
            color=alt.Color(
                "used:N",
                scale=alt.Scale(domain=[True, False], range=["#d62728", "#bbbbbb"]),
                title="level used",
            ),
            tooltip=[alt.Tooltip("level:Q", format=".5f"), "used:N"],
        )
    )
    return alt.layer(hist, rules).properties(height=260)


def error_frame(w: torch.Tensor, symmetric: bool) -> pd.DataFrame:
    """Relative error of `w` rounded at every bit width and group size (plus FP8 per channel)."""
    rows = []
    for choice in (*GROUP_SIZES, ROW):
        gs = group_size_of(choice, w.shape[1])
        if w.shape[1] % gs:
            continue
        for bits in BITS:
            err = relative_error(w, fake_quant_groups(w, bits, gs, symmetric))
            rows.append({"bits": bits, "group": f"g{gs}" if choice != ROW else ROW, "error": err})
    fp8 = relative_error(w, F.dequantize_fp8(F.quantize_fp8(w)))
    rows.append({"bits": 8, "group": "fp8 e4m3 (per row)", "error": fp8})
    return pd.DataFrame(rows)


def error_chart(frame: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("bits:Q", scale=alt.Scale(domain=[2, 8]), title="bits per weight (codes)"),
            y=alt.Y("error:Q", scale=alt.Scale(type="log"), title="relative error ‖Ŵ−W‖/‖W‖"),
            color=alt.Color("group:N", title="group"),
            tooltip=["group", "bits", alt.Tooltip("error:Q", format=".4f")],
        )
        .properties(height=280)
    )


# ------------------------------------------------------------------ activation outliers
OUTLIER_METRICS = {
    "row_ratio_median": "max / median |x| within a token (weights: within a row)",
    "channel_ratio": "largest channel max / median channel max",
    "int8_rel_error": "INT8 round-trip error (per token / per output row)",
}
# The y-axis titles: short enough to fit beside a 300-pixel chart (the radio says the rest).
OUTLIER_AXES = {
    "row_ratio_median": "max / median |x|",
    "channel_ratio": "channel max / median",
    "int8_rel_error": "INT8 relative error",
}


def outlier_frame(stats: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (layer, side): the spread numbers of `LayerStats.to_dict()`."""
    rows = []
    for i, s in enumerate(stats):
        for side in ("activation", "weight"):
            rows.append(
                {"order": i, "layer": s["short_name"], "side": side,
                 **{m: s[side][m] for m in OUTLIER_METRICS}}
            )  # fmt: skip
    return pd.DataFrame(rows)


def outlier_chart(frame: pd.DataFrame, metric: str) -> alt.Chart:
    order = list(dict.fromkeys(frame.sort_values("order")["layer"]))
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("layer:N", sort=order, title=None),
            xOffset="side:N",
            y=alt.Y(f"{metric}:Q", title=OUTLIER_AXES[metric]),
            color=alt.Color("side:N", title=None),
            tooltip=["layer", "side", alt.Tooltip(f"{metric}:Q", format=".3f")],
        )
        .properties(height=300)
    )


# ------------------------------------------------------------------ speed (bench results)
def latest(root: str | Path | None = None) -> Path | None:
    """The newest `quant-*.json` over every device, or None."""
    found = runs(root)
    return found[0] if found else None


def runs(root: str | Path | None = None) -> list[Path]:
    """Every committed `quant-*.json`, newest first."""
    return [r.path for r in find_results("quant", root if root is not None else results_root())]


def fullest(paths: list[Path]) -> int:
    """Index of the run with the most GEMM rows (newest on a tie): a partial rerun of one
    method should not hide the full comparison."""
    from minirt.results import load_results

    sizes = [len(gemm_frame(load_results(p))) for p in paths]
    return max(range(len(paths)), key=lambda i: (sizes[i], -i))


def gemm_frame(record: dict[str, Any]) -> pd.DataFrame:
    """The GEMM rows of a quant result: shape, M, method, ms, tflops, speedup_vs_bf16.

    A row is a GEMM when its "kind" (or "experiment") is "gemm"; its shape is "shape", or
    "model/layer".
    """
    rows = []
    for r in record.get("results", []):
        if (r.get("kind") or r.get("experiment")) != "gemm":
            continue
        shape = r.get("shape") or f"{r.get('model', '?')}/{r.get('layer', '?')}"
        rows.append(
            {"shape": shape, "N": r.get("N"), "K": r.get("K"), "M": r["M"],
             "method": r["method"], "ms": r.get("ms"), "tflops": r.get("tflops"),
             "speedup_vs_bf16": r.get("speedup_vs_bf16")}
        )  # fmt: skip
    return pd.DataFrame(
        rows, columns=["shape", "N", "K", "M", "method", "ms", "tflops", "speedup_vs_bf16"]
    )


# What each `method` of a quant run is (`python -m minirt.bench quant`).
METHODS = {
    "bf16": "cuBLAS bf16, the baseline",
    "scaled_mm_fp8": "cuBLAS FP8 (torch._scaled_mm), activations already quantized",
    "fp8": "ours, FP8, activations already quantized",
    "int8": "ours, INT8, activations already quantized",
    "fp8_fused": "ours, FP8 with the activations quantized inside: the engine's path up to 16 "
    "tokens (a GEMV at one row)",
    "int_mm": "cuBLAS INT8 without scales (torch._int_mm, from 17 tokens)",
    "w4a16-g128": "ours, 4-bit weights, a scale per 128 inputs",
    "w4a16-g32": "ours, 4-bit weights, a scale per 32 inputs",
    "dynamic_scales": "the per-token scales alone, as separate PyTorch ops (not a GEMM)",
}


def method_legend(frame: pd.DataFrame) -> str:
    """One line per method present: its name and, where known, what it measures."""
    present = list(dict.fromkeys(frame["method"]))
    return "  \n".join(f"**{m}**: {METHODS[m]}" if m in METHODS else f"**{m}**" for m in present)


def crossover(frame: pd.DataFrame, shape: str) -> pd.DataFrame:
    """Per method of one shape: speedup at the smallest and largest M, and where it beats bf16."""
    rows = []
    sub = frame[(frame["shape"] == shape) & (frame["method"] != "bf16")].sort_values("M")
    for method, g in sub.groupby("method", sort=False):
        wins = g[g["speedup_vs_bf16"] >= 1.0]["M"].tolist()
        rows.append(
            {"method": method,
             "smallest M": int(g["M"].iloc[0]), "speedup there": g["speedup_vs_bf16"].iloc[0],
             "largest M": int(g["M"].iloc[-1]), "speedup at largest": g["speedup_vs_bf16"].iloc[-1],
             "beats bf16 at M": ", ".join(map(str, wins)) or "never"}
        )  # fmt: skip
    return pd.DataFrame(rows)


def speed_chart(frame: pd.DataFrame, shape: str) -> alt.LayerChart:
    sub = frame[frame["shape"] == shape]
    lines = (
        alt.Chart(sub)
        .mark_line(point=True)
        .encode(
            x=alt.X("M:Q", scale=alt.Scale(type="log", base=2), title="tokens M (batch rows)"),
            y=alt.Y("speedup_vs_bf16:Q", scale=alt.Scale(type="log"), title="speedup vs bf16"),
            color=alt.Color("method:N"),
            tooltip=["method", "M", alt.Tooltip("ms:Q", format=".4f"),
                     alt.Tooltip("speedup_vs_bf16:Q", format=".2f")],
        )
    )  # fmt: skip
    one = alt.Chart(pd.DataFrame({"y": [1.0]})).mark_rule(strokeDash=[4, 3]).encode(y="y:Q")
    return alt.layer(lines, one).properties(height=320)
