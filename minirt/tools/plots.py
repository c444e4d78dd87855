"""Figures for the notebooks, drawn from traces, tool results and presets (matplotlib).

Every function returns a `Figure` and draws only what it is given, so the dashboard and the
notebooks can share them; a notebook cell that calls one shows the figure. Colours follow the
sequence id (tab20), so a sequence keeps its colour across figures of one run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from minirt.config import ModelConfig
from minirt.tools.roofline import H100_SXM, Hardware, crossover_batch, decode_step

_CMAP = plt.get_cmap("tab20")


def seq_color(seq_id: int):
    return _CMAP(seq_id % 20)


def plot_step_tokens(steps: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """Prefill and decode tokens per step (bars) and running sequences (line)."""
    fig, ax = plt.subplots(figsize=(9, 3))
    x = [s["step"] for s in steps]
    pre = [s["num_prefill_tokens"] for s in steps]
    dec = [s["num_decode_tokens"] for s in steps]
    ax.bar(x, pre, color="tab:orange", label="prefill tokens")
    ax.bar(x, dec, bottom=pre, color="tab:blue", label="decode tokens")
    ax.set_xlabel("step")
    ax.set_ylabel("tokens in the step")
    ax2 = ax.twinx()
    ax2.plot(x, [s["num_running"] for s in steps], color="black", lw=1.2, label="running seqs")
    ax2.set_ylabel("running sequences")
    ax2.set_ylim(bottom=0)
    fig.legend(loc="upper right", fontsize=8, bbox_to_anchor=(0.9, 0.88))
    ax.set_title(title or "what each step computed")
    fig.tight_layout()
    return fig


def plot_kv_blocks(
    steps: Sequence[Mapping[str, Any]], index: int, num_blocks: int, shown_blocks: int = 64
) -> Figure:
    """The pool after step `index`: each physical block coloured by the sequence holding it
    (left), and each sequence's block table, logical order left to right (right)."""
    step = steps[index]
    tables = {int(k): v for k, v in step["block_tables"].items()}
    shown = min(num_blocks, shown_blocks)
    cols = min(16, shown)
    rows = -(-shown // cols)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.4), width_ratios=[1, 1.3])
    owner = {b: s for s, t in tables.items() for b in t}
    for b in range(shown):
        r, c = divmod(b, cols)
        color = seq_color(owner[b]) if b in owner else "white"
        ax.add_patch(plt.Rectangle((c, -r), 1, -1, facecolor=color, edgecolor="grey", lw=0.5))
        ax.text(c + 0.5, -r - 0.5, str(b), ha="center", va="center", fontsize=6)
    ax.set_xlim(0, cols)
    ax.set_ylim(-rows, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    more = f" (first {shown} of {num_blocks})" if shown < num_blocks else ""
    ax.set_title(f"pool after step {step['step']}{more}", fontsize=9)
    for row, (seq_id, table) in enumerate(sorted(tables.items())):
        for j, b in enumerate(table):
            ax2.add_patch(
                plt.Rectangle((j, -row), 1, -0.8, facecolor=seq_color(seq_id), edgecolor="grey")
            )
            ax2.text(j + 0.5, -row - 0.4, str(b), ha="center", va="center", fontsize=6)
        ax2.text(-0.3, -row - 0.4, f"seq {seq_id}", ha="right", va="center", fontsize=7)
    width = max([len(t) for t in tables.values()] + [4])
    ax2.set_xlim(-2.5, width)
    ax2.set_ylim(-max(len(tables), 1), 0.2)
    ax2.axis("off")
    extra = f"; preempted {step['preempted']}" if step["preempted"] else ""
    ax2.set_title(f"block tables (logical -> physical){extra}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_step_times(steps: Sequence[Mapping[str, Any]]) -> Figure:
    """Milliseconds per step spent scheduling and in the model forward."""
    fig, ax = plt.subplots(figsize=(9, 2.8))
    x = [s["step"] for s in steps]
    ax.plot(x, [s["forward_ms"] for s in steps], label="forward (model)")
    ax.plot(x, [s["schedule_ms"] for s in steps], label="schedule (Python)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_decode_cost(with_cache, without_cache, prompt_len: int) -> Figure:
    """Per-token forward time and tokens computed, with and without a KV cache (DecodeRuns)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
    pos = [prompt_len + i for i in range(len(without_cache.forward_ms))]
    ax.plot(pos, without_cache.forward_ms, label="no cache: recompute the sequence")
    ax.plot(pos[1:], with_cache.forward_ms[1 : len(pos)], label="KV cache: one new token")
    ax.set_xlabel("sequence length when the token is made")
    ax.set_ylabel("forward ms per token")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax2.plot(pos, without_cache.tokens_computed, label="no cache")
    ax2.plot(pos[1:], with_cache.tokens_computed[1 : len(pos)], label="KV cache")
    ax2.set_xlabel("sequence length when the token is made")
    ax2.set_ylabel("tokens through the model")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_kv_capacity(
    configs: Mapping[str, ModelConfig],
    seq_lens: Sequence[int],
    memory_bytes: float,
    dtype: str = "bfloat16",
    mark_len: int | None = None,
) -> Figure:
    """Concurrent sequences that fit beside the weights, against sequence length."""
    from minirt.tools.kv_size import kv_size_row

    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, config in configs.items():
        fits = [kv_size_row(name, config, n, memory_bytes, dtype)["max_seqs"] for n in seq_lens]
        ax.plot(seq_lens, [max(f, 0.5) for f in fits], marker=".", label=name)
    if mark_len:
        ax.axvline(mark_len, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens per sequence")
    ax.set_ylabel("sequences that fit")
    ax.set_title(f"{memory_bytes / 1e9:g} GB, weights and KV in {dtype}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_waste_series(series: Sequence, reserve_label: str) -> Figure:
    """KV slots used, held by pages, and reserved contiguously, after each step (KVWaste list)."""
    fig, ax = plt.subplots(figsize=(9, 3))
    x = range(len(series))
    ax.plot(x, [w.reserved_tokens for w in series], label=f"contiguous ({reserve_label})")
    ax.plot(x, [w.paged_tokens for w in series], label="paged: blocks held")
    ax.plot(x, [w.used_tokens for w in series], ls="--", color="black", label="tokens stored")
    ax.set_xlabel("step")
    ax.set_ylabel("KV slots (tokens)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_block_size_waste(lengths: Sequence[int], block_sizes: Sequence[int], mark: int) -> Figure:
    """Paged waste (last-block slack) against block size, for sequences of `lengths` tokens."""
    from minirt.tools.kv_waste import waste_from_lengths

    waste = [100 * waste_from_lengths(lengths, b, max(lengths)).paged_waste for b in block_sizes]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(block_sizes, waste, marker="o")
    w = 100 * waste_from_lengths(lengths, mark, max(lengths)).paged_waste
    ax.plot([mark], [w], marker="o", color="red", ms=9, label=f"block {mark}: {w:.1f} %")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("block size (tokens)")
    ax.set_ylabel("slots held but empty (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_batching(runs: Sequence) -> Figure:
    """Sequences in each step's batch, for each BatchingRun measured on the engine."""
    fig, ax = plt.subplots(figsize=(9, 3))
    for run in runs:
        ax.step(range(run.num_steps), run.running_per_step, where="post", label=run.policy)
    ax.axhline(runs[0].batch_size, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("sequences running")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_latency_sweep(rows: Sequence[Mapping[str, Any]], device: str = "") -> Figure:
    """TTFT, TPOT and throughput against batch size (rows from `sweep_batch_sizes`)."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    b = [r["batch_size"] for r in rows]
    panels = [
        ("mean_ttft_s", 1e3, "TTFT (ms)"),
        ("mean_tpot_s", 1e3, "TPOT (ms)"),
        ("tokens_per_s", 1, "output tokens/s"),
    ]
    for ax, (key, scale, label) in zip(axes, panels, strict=True):
        ax.plot(b, [r[key] * scale for r in rows], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
    if device:
        fig.suptitle(device, fontsize=9)
    fig.tight_layout()
    return fig


def plot_roofline(
    config: ModelConfig,
    context_len: int,
    batches: Sequence[int],
    hw: Hardware = H100_SXM,
    title: str = "",
) -> Figure:
    """Left: the roofline with one point per batch. Right: step time and tokens/s vs batch."""
    steps = [decode_step(config, b, context_len, hw) for b in batches]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    lo, hi = 0.5, max(4 * hw.ridge_point, max(s.intensity for s in steps) * 2)
    xs = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    ax.plot(xs, [min(hw.peak_flops, x * hw.mem_bandwidth) / 1e12 for x in xs], color="black")
    for s in steps:
        attained = s.flops / s.time_s / 1e12
        ax.plot([s.intensity], [attained], "o", color="tab:red" if s.bound == "compute" else "C0")
        ax.annotate(str(s.batch), (s.intensity, attained), fontsize=7, xytext=(3, -9),
                    textcoords="offset points")  # fmt: skip
    ax.axvline(hw.ridge_point, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs per byte moved")
    ax.set_ylabel("attained TFLOP/s")
    ax.set_title(f"roofline, {hw.name}; labels = batch", fontsize=9)
    ax2.plot(batches, [s.memory_s * 1e3 for s in steps], label="memory time")
    ax2.plot(batches, [s.compute_s * 1e3 for s in steps], label="compute time")
    cross = crossover_batch(config, context_len, hw)
    if cross is not None and cross <= max(batches):
        ax2.axvline(cross, color="red", ls="--", lw=0.8, label=f"crossover: batch {cross}")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("ms per decode step")
    ax2.legend(fontsize=8)
    ax2.set_title(title or f"context {context_len} tokens", fontsize=9)
    fig.tight_layout()
    return fig


def plot_schedules(output_lens: Sequence[int], batch_size: int) -> Figure:
    """Predicted running requests per step under static and continuous batching."""
    from minirt.tools.batching import continuous_schedule, static_schedule

    fig, ax = plt.subplots(figsize=(9, 3))
    total = sum(output_lens)
    for name, sched in (("static", static_schedule), ("continuous", continuous_schedule)):
        run = sched(output_lens, batch_size)
        use = total / (len(run) * batch_size)
        label = f"{name}: {len(run)} steps, {use:.0%} of slots busy"
        ax.step(range(len(run)), run, where="post", label=label)
    ax.axhline(batch_size, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("requests running")
    ax.set_ylim(0, batch_size * 1.15)
    ax.set_title(
        f"{len(output_lens)} requests, batch {batch_size} (from output lengths)", fontsize=9
    )
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def plot_forward_ms(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """Forward milliseconds per step for several runs (say, chunked prefill on and off)."""
    fig, ax = plt.subplots(figsize=(9, 3))
    for label, steps in runs.items():
        ax.plot([s["step"] for s in steps], [s["forward_ms"] for s in steps], marker=".",
                label=label)  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("forward ms")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
