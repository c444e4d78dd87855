"""A recorded decode step, varied: a kernel planted slow, launches jittered, kernels that overlap.

`variant(seed, mode, plant)` rewrites the H100's committed step (batch 1, eager or replayed from a
CUDA graph; `python -m minirt.bench timeline`) into a fresh, plausible one, as timeline rows
(`lane`, `name`, `start_us`, `dur_us`, in no particular order). The GPU lane is replayed as one
stream: a kernel starts when it is launched or when the one before it ends, so a slow kernel
delays the queued ones behind it, and the host's blocking copy at the end waits for the last.
What was planted, and what a profiler should then advise, is in `Variant.truth`. Lab 10 grades on
such variants (notebook 05 teaches what to read in them).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from minirt.tools.step_timeline import rows_by_mode

RECORDED = (
    Path(__file__).resolve().parents[2]
    / "bench"
    / "results"
    / "h100"
    / "timeline-20261205-171932.json"
)
MODES = ("eager", "graphs")
# what is planted: nothing, a kernel a few times slower in a layer or two (an anomaly that costs
# little), one taking 90-160 µs more in a layer or three (worth tuning), the norms and the SwiGLU
# activation each as a chain of PyTorch's generic kernels (unfused; replayed graphs only)
PLANTS = ("none", "small", "slow", "unfused")
ADVICE = ("graphs", "tune", "fuse", "nothing")
GPU, RUNTIME = "GPU kernel", "CPU → CUDA runtime"
SMALL_KERNELS = (
    "_rms_norm_kernel",
    "_store_kv_kernel",
    "_silu_mul_kernel",
    "_decode_combine_kernel",
)
SLOW_KERNELS = (
    "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT",
    "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_splitK_TNT",
    "_decode_split_kernel",
    "_qk_norm_rope_kernel",
)
ELEMENTWISE = "void at::native::vectorized_elementwise_kernel<4, at::native::{}>"
UNFUSED = {  # a fused kernel -> the generic kernels PyTorch runs for the same work, unfused
    "_rms_norm_kernel": (
        ELEMENTWISE.format("pow_tensor_scalar_kernel<float>"),
        "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps>>",
        ELEMENTWISE.format("rsqrt_mul_kernel<c10::BFloat16>"),
    ),
    "_silu_mul_kernel": (
        ELEMENTWISE.format("silu_kernel<c10::BFloat16>"),
        ELEMENTWISE.format("MulFunctor<c10::BFloat16>"),
    ),
}
SIDE_COPY = "Memcpy HtoD (Pinned -> Device)"  # the next step's inputs, on a copy stream
QUEUED_GAP_US = 1.0  # a kernel that starts within this of the previous end was queued


@dataclass(frozen=True)
class Planted:
    """What a variant changed: `kernel` slowed `factor` times in its `occurrences` (the how-many-th
    event of that name), and the advice that follows (one of ADVICE)."""

    mode: str
    plant: str
    kernel: str | None
    occurrences: tuple[int, ...]
    factor: float
    advice: str


@dataclass
class Variant:
    rows: list[dict[str, Any]]
    truth: Planted


@cache
def _recorded() -> dict[str, tuple[dict[str, Any], ...]]:
    record = json.loads(RECORDED.read_text())
    return {mode: tuple(rows) for mode, rows in rows_by_mode(record).items()}


def recorded(mode: str) -> list[dict[str, Any]]:
    """The committed step's rows in `mode` ("eager" or "graphs"), as recorded."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    return [dict(r) for r in _recorded()[mode]]


def _plant(rng: random.Random, mode: str, plant: str, kernels: list[dict]) -> Planted:
    """Pick what to slow down and mark the chosen kernels with their new duration."""
    advice = (
        "graphs" if mode == "eager" else {"slow": "tune", "unfused": "fuse"}.get(plant, "nothing")
    )
    if plant in ("none", "unfused"):
        return Planted(mode, plant, None, (), 1.0, advice)
    name = rng.choice(SMALL_KERNELS if plant == "small" else SLOW_KERNELS)
    mine = [k for k in kernels if k["name"] == name]
    count = rng.randint(1, 2 if plant == "small" else 3)
    picked = sorted(rng.sample(range(len(mine)), count))
    median = sorted(k["dur_us"] for k in mine)[len(mine) // 2]
    factor = rng.uniform(3, 5) if plant == "small" else 1 + rng.uniform(90, 160) / median
    for i in picked:
        mine[i]["dur_us"] *= factor
    return Planted(mode, plant, name, tuple(picked), round(factor, 3), advice)


def variant(seed: int, mode: str = "graphs", plant: str = "none") -> Variant:
    """A fresh step from the recorded one: host times scaled (a faster or slower host), kernel
    durations jittered by a few per cent, `plant` applied, a copy on a side stream overlapping a
    kernel and, replayed from a graph, a few kernels starting before the one ahead ends (the next
    kernel's prologue overlapping, as with programmatic dependent launch)."""
    if plant not in PLANTS:
        raise ValueError(f"plant {plant!r}: one of {', '.join(PLANTS)}")
    if plant == "unfused" and mode != "graphs":
        raise ValueError("the unfused step exists replayed from a graph only (mode='graphs')")
    # one stream for the step's own jitter, one for the plant: the same seed and mode give the
    # same step whatever is planted in it
    rng, plant_rng = random.Random(f"{seed}:{mode}"), random.Random(f"{seed}:{mode}:{plant}")
    rows = recorded(mode)
    scale = rng.uniform(0.85, 1.2) if mode == "eager" else rng.uniform(0.9, 1.1)
    host = [r for r in rows if r["lane"] != GPU]
    old = sorted((r for r in rows if r["lane"] == GPU), key=lambda r: r["start_us"])
    kernels = [dict(r, dur_us=r["dur_us"] * rng.uniform(0.96, 1.04)) for r in old]
    truth = _plant(plant_rng, mode, plant, kernels)
    gpu = _replay(rng, old, kernels, scale, plant == "unfused", mode == "graphs")
    old_end = scale * max(r["start_us"] + r["dur_us"] for r in old)
    delay = max(r["start_us"] + r["dur_us"] for r in gpu) - old_end
    out = []
    for r in host:  # the host waits for the GPU in the blocking copy that straddles its end
        start, end = scale * r["start_us"], scale * (r["start_us"] + r["dur_us"])
        if start >= old_end:
            start, end = start + delay, end + delay
        elif end > old_end:
            end = max(start + 0.1, end + delay)
        out.append({**r, "start_us": start, "dur_us": end - start})
    out += gpu
    for r in out:
        r["start_us"], r["dur_us"] = round(r["start_us"], 3), round(r["dur_us"], 3)
    rng.shuffle(out)  # a trace's events come in no promised order
    return Variant(out, truth)


def _replay(
    rng, old: list[dict], kernels: list[dict], scale: float, unfused: bool, graphs: bool
) -> list[dict]:
    """The GPU lane as one stream: a launched kernel starts at its launch (host time, scaled), a
    queued one right after the previous; unfused kernels become their generic chains."""
    out, end, prev_end = [], float("-inf"), float("-inf")
    for o, k in zip(old, kernels, strict=True):
        gap = o["start_us"] - prev_end
        prev_end = o["start_us"] + o["dur_us"]
        ready = scale * o["start_us"] if gap > QUEUED_GAP_US else float("-inf")
        parts = UNFUSED.get(k["name"]) if unfused else None
        if parts is None:
            start = max(ready, end + min(max(gap, 0.0), QUEUED_GAP_US))
            out.append({**k, "start_us": start})
            end = start + k["dur_us"]
            continue
        for j, name in enumerate(parts):  # a chain of small kernels, each queued behind the last
            start = max(ready, end + (min(max(gap, 0.0), QUEUED_GAP_US) if j == 0 else 0.3))
            dur = rng.uniform(1.3, 2.2)
            out.append({"lane": GPU, "name": name, "start_us": start, "dur_us": dur})
            end = start + dur
    if graphs:  # the next kernel's prologue overlapping a GEMM's tail
        queued = [
            i
            for i in range(1, len(out))
            if out[i - 1]["name"].startswith("nvjet")
            and out[i]["start_us"] - out[i - 1]["start_us"] - out[i - 1]["dur_us"] < QUEUED_GAP_US
        ]
        for i in rng.sample(queued, min(4, len(queued))):
            out[i]["start_us"] -= min(rng.uniform(0.3, 0.8), 0.5 * out[i - 1]["dur_us"])
    # the side copy starts inside a kernel of the step's body (not the last ones: the step ends
    # with the sampled token's copy back, which the host waits for)
    beside = rng.choice([r for r in out[1:-5] if r["dur_us"] >= 2.0])
    copy_start = beside["start_us"] + rng.uniform(0.2, 0.6)
    out.append(
        {"lane": GPU, "name": SIDE_COPY, "start_us": copy_start, "dur_us": rng.uniform(2.0, 6.0)}
    )
    return out
