"""One way to time GPU work for every benchmark: CUDA events around each call, the median; and
the name of the GPU's results folder."""

from __future__ import annotations

import statistics
from collections.abc import Callable


def cuda_median_ms(fn: Callable[[], object], reps: int = 10, warmup: int = 1) -> float:
    """Median over `reps` calls of fn's GPU time (ms, CUDA events on the current stream), after
    `warmup` untimed calls (allocation, handles, autotuning, compilation)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()  # nothing earlier runs inside the interval
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gpu_device() -> str:
    """The results folder of this GPU: h100, h200, or cuda for any other."""
    import torch

    name = torch.cuda.get_device_name()
    return "h100" if "H100" in name else "h200" if "H200" in name else "cuda"
