"""Committed benchmark results beside the roofline model: decode step time and throughput vs batch.

A result set is one `bench/results/<device>/<topic>-<date>.json` written by `python -m
minirt.bench` (read with `minirt.bench.load_results`); three topics measure decode steps:

- `roofline` (CUDA): `eager_decode` rows (batch, step_ms, tokens_per_s) and the two ceilings,
  `hbm_copy` (GB/s) and `bf16_matmul` (TFLOP/s), measured on the same GPU;
- `gpu` (CUDA): `decode` rows of several systems (minirt with and without CUDA graphs,
  transformers eager and compiled), the same two ceilings, `roofline` and `offline` rows;
- `engine` (CPU): `decode` rows of the engine (batch_size, elapsed_s, num_steps, tokens_per_s).

`normalise` turns any of them into one table (system, batch, step_ms, tokens_per_s); the model
line is `minirt.tools.roofline.decode_step` on the set's model shape and mean context, under the
ceilings measured in the set (or the H100 datasheet's). Notebook 03 (latency vs throughput).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from minirt.config import PRESETS, ModelConfig
from minirt.results import load_results
from minirt.tools.results import ResultFile, find_results
from minirt.tools.roofline import H100_SXM, Hardware, crossover_batch, decode_step

TOPICS = ("roofline", "gpu", "engine")
COLUMNS = ["system", "batch", "step_ms", "tokens_per_s"]
MODEL = "roofline model"
EMBEDDED = "minirt embedded target"
DEFAULT_CONTEXT = 128  # tokens, when a set records neither prompt length nor new tokens
MAX_MODEL_BATCH = 1 << 16
_FILE = re.compile(rf"^({'|'.join(TOPICS)})-(\d{{8}})-(\d{{6}})(?:-(\d+))?\.json$")  # a file's name


class ResultError(ValueError):
    """A result file this page can't draw: the message says what is wrong with it."""


class ResultSet(ResultFile):
    """One committed roofline, gpu or engine result (`minirt.tools.results.ResultFile`)."""

    @property
    def label(self) -> str:
        extra = f" (#{self.n + 1})" if self.n else ""
        return f"{self.device} / {self.topic} / {self.date}{extra}"


def discover(root: str | Path | None = None) -> list[ResultSet]:
    """Every roofline, gpu and engine result under `root/<device>/`, newest first.

    `root` defaults to the repository's `bench/results` (`minirt.tools.results.results_root`).
    Files are found by name only, so one malformed file can't hide the others.
    """
    return [ResultSet(f.path, f.device, f.topic, f.stamp, f.n) for f in find_results(TOPICS, root)]


def load_set(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """`minirt.bench.load_results`, then the envelope this page needs; ResultError if unusable."""
    name = name or Path(path).name
    try:
        record = load_results(path)
    except UnicodeDecodeError:
        raise ResultError("not a text (UTF-8) file") from None
    except json.JSONDecodeError as e:
        raise ResultError(f"not valid JSON ({e})") from None
    except ValueError as e:  # load_results: not a result of this schema
        raise ResultError(str(e).replace(str(path), "the file")) from None
    except OSError as e:
        raise ResultError(f"can't read it ({e.strerror or e})") from None
    topic = record.get("topic")
    if topic not in TOPICS:
        raise ResultError(f"a {topic!r} result; this page draws the topics {', '.join(TOPICS)}")
    rows = record.get("results")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "name" in r for r in rows):
        raise ResultError("`results` must be a list of rows, each with a `name`")
    return record


def load_upload(data: bytes, name: str) -> dict[str, Any]:
    """An uploaded result file, read by the same `load_results` as a committed one."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.json"
        path.write_bytes(data)
        return load_set(path, name)


def _number(row: dict[str, Any], key: str) -> float | None:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        return None
    return float(v)


def _point(system: str, row: dict[str, Any], batch_key: str, i: int) -> dict[str, Any]:
    """One measured decode point; step time and tokens/s each follow from the other."""
    batch = row.get(batch_key)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ResultError(f"row {i} ({row['name']}, {system}) has no positive integer {batch_key}")
    step_ms = _number(row, "step_ms")
    if step_ms is None and _number(row, "elapsed_s") and _number(row, "num_steps"):
        step_ms = 1e3 * row["elapsed_s"] / row["num_steps"]  # the engine benchmark's rows
    tokens_per_s = _number(row, "tokens_per_s")
    if step_ms is None and tokens_per_s is not None:
        step_ms = 1e3 * batch / tokens_per_s
    if step_ms is None:
        raise ResultError(f"row {i} ({row['name']}, {system}, batch {batch}) has no step time")
    if tokens_per_s is None:
        tokens_per_s = 1e3 * batch / step_ms
    return {"system": system, "batch": batch, "step_ms": step_ms, "tokens_per_s": tokens_per_s}


def normalise(record: dict[str, Any]) -> pd.DataFrame:
    """Any set's measured decode steps as one table: (system, batch, step_ms, tokens_per_s).

    roofline: `eager_decode` rows are the engine without CUDA graphs ("minirt-eager"); gpu:
    `decode` rows carry their `system` (rows that record an `error` instead are skipped: see
    `failed_rows`); engine (CPU): `decode` rows, step time = elapsed_s / num_steps. Rows of
    other names (ceilings, kernels, profiles, …) are not decode steps and are left out.
    """
    topic = record.get("topic")
    points = []
    for i, row in enumerate(record.get("results", [])):
        name = row.get("name")
        if topic == "roofline" and name == "eager_decode":
            points.append(_point("minirt-eager", row, "batch", i))
        elif topic == "gpu" and name == "decode" and "error" not in row:
            points.append(_point(str(row.get("system", "?")), row, "batch", i))
        elif topic == "engine" and name == "decode":
            points.append(_point("minirt-engine (cpu)", row, "batch_size", i))
    frame = pd.DataFrame(points, columns=COLUMNS)
    return frame.sort_values(["system", "batch"], kind="stable").reset_index(drop=True)


def failed_rows(record: dict[str, Any]) -> list[str]:
    """Decode runs the benchmark tried and recorded as failed (e.g. torch.compile refused)."""
    return [
        f"{r.get('system', '?')} at batch {r.get('batch', '?')}: {r['error']}"
        for r in record.get("results", [])
        if r.get("name") == "decode" and "error" in r
    ]


def rows_named(record: dict[str, Any], name: str, columns: list[str]) -> pd.DataFrame:
    """The set's rows of one name as a table of `columns` (absent fields are blank)."""
    rows = [r for r in record.get("results", []) if r.get("name") == name]
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


def measured_hardware(record: dict[str, Any]) -> Hardware | None:
    """The ceilings measured in the set: HBM copy GB/s and bf16 matmul TFLOP/s.

    A set with only one of them keeps the datasheet's other; None when it has neither.
    """
    by_name = {r.get("name"): r for r in record.get("results", [])}
    bw = _number(by_name.get("hbm_copy", {}), "gb_per_s")
    peak = _number(by_name.get("bf16_matmul", {}), "tflop_per_s")
    if bw is None and peak is None:
        return None
    what = {
        (True, True): "measured in this set",
        (True, False): "measured HBM copy, datasheet bf16 peak",
        (False, True): "datasheet bandwidth, measured bf16 matmul",
    }
    return Hardware(
        what[(bw is not None, peak is not None)],
        bw * 1e9 if bw is not None else H100_SXM.mem_bandwidth,
        peak * 1e12 if peak is not None else H100_SXM.peak_flops,
    )


def model_name(record: dict[str, Any]) -> str | None:
    """The model shape the set ran: a `PRESETS` name, EMBEDDED, or None if it can't tell.

    GPU benchmarks write `config.model` as e.g. "qwen3-0.6b shape, random bf16"; the CPU
    engine benchmark writes None when it ran the embedded target.
    """
    config = record.get("config") or {}
    text = config.get("model")
    if text is None:
        return EMBEDDED if record.get("topic") == "engine" else None
    text = str(text).lower()
    for name in sorted(PRESETS, key=len, reverse=True):  # "qwen3-8b" before a shorter prefix
        if text.startswith(name):
            return name
    return None


def context_len(record: dict[str, Any]) -> int | None:
    """Mean context of a decode step in the set: prompt + half the new tokens (the model's).

    The most common value over the decode rows (rows of one set normally share it), else the
    set's config; None when the set records neither.
    """
    seen = []
    for r in record.get("results", []):
        if r.get("name") in ("eager_decode", "decode") and "prompt_len" in r and "new_tokens" in r:
            seen.append(int(r["prompt_len"]) + int(r["new_tokens"]) // 2)
        elif r.get("name") == "decode" and {"num_prompt_tokens", "batch_size", "max_tokens"} <= set(
            r
        ):  # the CPU engine benchmark: prompts differ in length, use their mean
            prompt = round(r["num_prompt_tokens"] / max(r["batch_size"], 1))
            seen.append(prompt + int(r["max_tokens"]) // 2)
    if seen:
        return Counter(seen).most_common(1)[0][0]
    config = record.get("config") or {}
    if isinstance(config.get("prompt_len"), int) and isinstance(config.get("new_tokens"), int):
        return config["prompt_len"] + config["new_tokens"] // 2
    return None


def crossover(config: ModelConfig, context: int, hw: Hardware) -> int | None:
    """The batch from which the modelled step is compute-bound (minirt.tools.roofline's)."""
    return crossover_batch(config, context, hw)


def longest_context_with_crossover(config: ModelConfig, hw: Hardware) -> int | None:
    """The longest context at which some batch is compute-bound (None: not even at context 0).

    Longer contexts add KV bytes per sequence as fast as FLOPs, so past some length no batch is
    compute-bound; `crossover` is monotone in the context, so a binary search finds it.
    """
    if crossover(config, 0, hw) is None:
        return None
    lo, hi = 0, max(config.max_position_embeddings, 1)
    if crossover(config, hi, hw) is not None:
        return hi
    while lo < hi - 1:  # crossover at lo, none at hi
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if crossover(config, mid, hw) is not None else (lo, mid)
    return lo


def kv_outweighs_weights_batch(config: ModelConfig, context: int) -> int:
    """The smallest batch whose KV reads in a step are at least the weights' bytes."""
    one = decode_step(config, 1, context)
    return max(1, math.ceil(one.weight_bytes / one.kv_bytes))


def model_batches(measured: pd.DataFrame, *marks: int | None) -> list[int]:
    """Batches to draw the model at: a log-spaced grid past the data and the marked batches."""
    marked = {int(b) for b in marks if b}
    top = min(int(max([512, *(4 * measured["batch"]), *(4 * b for b in marked)])), MAX_MODEL_BATCH)
    grid = {round(2 ** (k / 8)) for k in range(int(8 * math.log2(top)) + 1)}
    grid |= set(measured["batch"].astype(int)) | marked
    return sorted(b for b in grid if 1 <= b <= top)


def model_frame(
    config: ModelConfig, context: int, hw: Hardware, batches: list[int]
) -> pd.DataFrame:
    """`decode_step` at each batch: modelled step time, tokens/s, and what bounds it."""
    rows = []
    for b in batches:
        s = decode_step(config, b, context, hw)
        rows.append(
            {
                "system": MODEL,
                "batch": b,
                "step_ms": 1e3 * s.time_s,
                "tokens_per_s": s.tokens_per_s,
                "memory_ms": 1e3 * s.memory_s,
                "compute_ms": 1e3 * s.compute_s,
                "bound": s.bound,
            }
        )
    return pd.DataFrame(rows)


def _color(systems: list[str]) -> alt.Color:
    palette = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d"]
    domain = [*systems, MODEL]
    colors = [palette[i % len(palette)] for i in range(len(systems))] + ["#7f7f7f"]
    return alt.Color("system:N", scale=alt.Scale(domain=domain, range=colors), title=None)


def step_chart(
    measured: pd.DataFrame, model: pd.DataFrame, cross: int | None, kv_batch: int | None = None
) -> alt.LayerChart:
    """Step time vs batch, log-log: measured systems (points), the model (dashed), crossover.

    `kv_batch` (drawn in grey) marks where a step's KV reads outweigh the weights'.
    """
    color = _color(sorted(measured["system"].unique()))
    x = alt.X("batch:Q", scale=alt.Scale(type="log", base=2), title="batch (sequences per step)")
    y = alt.Y("step_ms:Q", scale=alt.Scale(type="log"), title="decode step (ms)")
    tip = ["system", "batch", alt.Tooltip("step_ms:Q", format=",.3f")]
    line = (
        alt.Chart(model)
        .mark_line(strokeDash=[6, 4])
        .encode(x=x, y=y, color=color, tooltip=[*tip, "bound"])
    )
    dots = alt.Chart(measured).mark_line(point=True).encode(x=x, y=y, color=color, tooltip=tip)
    layers = [line, dots]
    marks = [(cross, f"compute-bound from batch {cross}", "#e45756", 8)]
    marks += [(kv_batch, f"KV reads > weights from batch {kv_batch}", "#7f7f7f", 24)]
    for batch, label, colour, dy in marks:
        if batch is None:
            continue
        mark = pd.DataFrame({"batch": [batch], "label": [label]})
        rule = alt.Chart(mark).mark_rule(color=colour, strokeDash=[2, 2])
        text = alt.Chart(mark).mark_text(align="left", dx=4, dy=dy, color=colour)
        layers += [
            rule.encode(x="batch:Q", tooltip=["label"]),
            text.encode(x="batch:Q", y=alt.value(0), text="label"),
        ]
    return alt.layer(*layers).properties(height=340)


def latency_throughput_chart(measured: pd.DataFrame, model: pd.DataFrame) -> alt.LayerChart:
    """Per-token latency (the step) vs tokens/s: one point per batch, labelled by its batch."""
    color = _color(sorted(measured["system"].unique()))
    x = alt.X("tokens_per_s:Q", scale=alt.Scale(type="log"), title="throughput (tokens/s)")
    y = alt.Y("step_ms:Q", scale=alt.Scale(type="log"), title="per-token latency = step (ms)")
    tip = [
        "system",
        "batch",
        alt.Tooltip("step_ms:Q", format=",.3f"),
        alt.Tooltip("tokens_per_s:Q", format=",.0f"),
    ]
    line = (
        alt.Chart(model)
        .mark_line(strokeDash=[6, 4])
        .encode(x=x, y=y, color=color, order="batch:Q", tooltip=tip)
    )
    base = alt.Chart(measured).encode(x=x, y=y, color=color)
    dots = base.mark_line(point=True).encode(order="batch:Q", tooltip=tip)
    labels = base.mark_text(align="left", dx=5, dy=-7, fontSize=11).encode(text="batch:Q")
    return alt.layer(line, dots, labels).properties(height=340)
