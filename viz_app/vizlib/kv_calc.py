"""KV-cache sizing for the calculator page: minirt.kv's formulas, laid out as numbers and charts.

Bytes per token, per sequence and per batch come from `kv_cache_bytes_per_token`, the weights
from `ModelConfig.num_parameters()`, the concurrency from `max_concurrent_sequences` — the same
functions `python -m minirt kv-size` and notebook 01 (KV cache) use. GB here are 10^9 bytes.
"""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import pandas as pd

from minirt.config import ModelConfig
from minirt.kv import kv_cache_bytes_per_token, max_concurrent_sequences
from minirt.kv.pool import dtype_bytes

GB = 1e9
GIB = 2**30
# The dtypes minirt.kv.pool.dtype_bytes knows (it raises on any other).
DTYPES = ("bfloat16", "float16", "float32", "float8_e4m3fn", "int8")
# Device memory as sold (GB = 10^9 bytes, as `python -m minirt kv-size --gpu-mem-gb` takes it).
GPUS: dict[str, float] = {
    "H100 80 GB": 80,
    "H200 141 GB": 141,
    "A100 80 GB": 80,
    "A100 40 GB": 40,
    "L40S 48 GB": 48,
    "L4 24 GB": 24,
    "RTX 4090 24 GB": 24,
}


def kv_numbers(
    config: ModelConfig,
    kv_dtype: str,
    seq_len: int,
    batch: int,
    block_size: int,
    gpu_mem_gb: float,
    weight_dtype: str = "bfloat16",
) -> dict[str, Any]:
    """Every number the page shows, in bytes or counts (formatting is the page's business)."""
    per_token = kv_cache_bytes_per_token(config, kv_dtype)
    blocks_per_seq = -(-seq_len // block_size)  # a sequence owns whole blocks
    weights = config.num_parameters() * dtype_bytes(weight_dtype)
    mem = gpu_mem_gb * GB
    max_seqs = max_concurrent_sequences(config, mem, seq_len, kv_dtype, weights, block_size)
    return {
        "bytes_per_token": per_token,
        "bytes_per_block": per_token * block_size,
        "bytes_per_sequence": per_token * seq_len,
        "blocks_per_sequence": blocks_per_seq,
        "batch_blocks": blocks_per_seq * batch,
        "batch_bytes": blocks_per_seq * batch * block_size * per_token,
        "num_parameters": config.num_parameters(),
        "weight_bytes": weights,
        "gpu_bytes": mem,
        "max_concurrent_sequences": max_seqs,
        "batch_fits": batch <= max_seqs,
    }


def fmt_bytes(n: float) -> str:
    """Binary units, the way memory is usually reported (KiB, MiB, GiB)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"


def concurrency_frame(
    config: ModelConfig,
    kv_dtype: str,
    block_size: int,
    gpu_mem_gb: float,
    weight_dtype: str,
    max_len: int,
) -> pd.DataFrame:
    """Max concurrent sequences for sequence lengths 128, 256, … up to `max_len`."""
    weights = config.num_parameters() * dtype_bytes(weight_dtype)
    lengths, n = [], 128
    while n <= max_len:
        lengths.append(n)
        n *= 2
    return pd.DataFrame(
        {
            "seq_len": lengths,
            "max_sequences": [
                max_concurrent_sequences(config, gpu_mem_gb * GB, s, kv_dtype, weights, block_size)
                for s in lengths
            ],
        }
    )


def concurrency_chart(frame: pd.DataFrame, seq_len: int, max_seqs: int) -> alt.LayerChart:
    """Log-log: how many sequences fit as they get longer; the chosen length is the red dot.

    Lengths at which not one sequence fits are left out: a log axis has no 0 to put them at.
    """
    fits = frame[frame["max_sequences"] > 0]
    x = alt.X(
        "seq_len:Q",
        scale=alt.Scale(
            type="log", base=2, domain=[frame["seq_len"].min(), frame["seq_len"].max()]
        ),
        title="sequence length",
    )
    y = alt.Y("max_sequences:Q", scale=alt.Scale(type="log"), title="max concurrent sequences")
    line = (
        alt.Chart(fits).mark_line(point=True).encode(x=x, y=y, tooltip=["seq_len", "max_sequences"])
    )
    here = pd.DataFrame({"seq_len": [seq_len], "max_sequences": [max_seqs]})
    dot = (
        alt.Chart(here[here["max_sequences"] > 0])
        .mark_point(color="#e45756", size=140, filled=True)
        .encode(x=x, y=y, tooltip=["seq_len", alt.Tooltip("max_sequences", title="fits")])
    )
    return (line + dot).properties(height=280)


def concurrency_caption(frame: pd.DataFrame, seq_len: int, max_seqs: int) -> str:
    """What the chart shows, and where it stops: the first length at which nothing fits."""
    text = (
        f"Red: your length ({seq_len:,} tokens, {max_seqs:,} sequences). Twice the length, half "
        "the sequences: the KV beside the weights is a fixed number of tokens."
    )
    none = frame[frame["max_sequences"] == 0]
    if not none.empty:
        text += f" From {int(none['seq_len'].min()):,} tokens on not one sequence fits."
    return text


def weights_too_big(numbers: dict[str, Any], weight_dtype: str, gpu_mem_gb: float) -> str:
    """Why nothing fits when the weights alone fill the device, and what would make room."""
    weights, mem = numbers["weight_bytes"], numbers["gpu_bytes"]
    text = (
        f"The weights alone ({weights / GB:,.1f} GB in {weight_dtype}) need more than the "
        f"device's {gpu_mem_gb:g} GB, so no sequence fits: 0 concurrent sequences."
    )
    eight_bit = numbers["num_parameters"]  # one byte a weight
    if eight_bit < mem and dtype_bytes(weight_dtype) > 1:
        text += f" In 8 bits (float8_e4m3fn or int8) they take {eight_bit / GB:,.1f} GB."
    gpus = math.ceil(weights / mem)
    return text + (
        f" Or split the model over {gpus}+ GPUs (tensor parallelism divides weights and KV), "
        "or pick a GPU with more memory."
    )


def memory_chart(numbers: dict[str, Any]) -> alt.Chart:
    """One bar: weights, the batch's KV and what is left; the rule marks the device's size."""
    weights, kv, mem = numbers["weight_bytes"], numbers["batch_bytes"], numbers["gpu_bytes"]
    left = mem - weights - kv
    parts = [("weights", weights), ("KV of the batch", kv)] + ([("free", left)] if left > 0 else [])
    frame = pd.DataFrame(
        [{"part": p, "GiB": v / GIB, "order": i} for i, (p, v) in enumerate(parts)]
    )
    scale = alt.Scale(
        domain=["weights", "KV of the batch", "free"], range=["#9d755d", "#4c78a8", "#e6e6e6"]
    )
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("sum(GiB):Q", title="GiB", stack="zero"),
            color=alt.Color("part:N", scale=scale, title=None),
            order="order:Q",
            tooltip=["part", alt.Tooltip("GiB:Q", format=",.2f")],
        )
    )
    device = (
        alt.Chart(pd.DataFrame({"GiB": [mem / GIB]}))
        .mark_rule(color="black", strokeWidth=2)
        .encode(x="GiB:Q", tooltip=[alt.Tooltip("GiB:Q", title="device GiB", format=",.1f")])
    )
    return (bars + device).properties(height=90)
