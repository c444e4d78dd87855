"""How many CPU threads torch should use to run one model: few, because threads that wait spin.

torch starts one intra-op thread per core. An embedded model's matrices are a few hundred wide,
so splitting one over threads saves nothing, and while another process keeps the cores busy the
waiting threads spin against it: 64 tokens took 10 s on 2 threads beside a matmul loop, 0.3 s on
one. The count grows with the work per token and never passes the cores this process may use.
"""

from __future__ import annotations

import os

import torch

from minirt.config import ModelConfig

# Weights one thread keeps busy per token: below this, a second thread costs more than it saves.
PARAMS_PER_THREAD = 64_000_000


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity masks
        return os.cpu_count() or 1


def default_cpu_threads(model_config: ModelConfig, cores: int | None = None) -> int:
    """Threads for `model_config` on a CPU: one per PARAMS_PER_THREAD weights, 1 to `cores`.

    The embedded target (6.4M parameters) and draft get 1; Qwen3-0.6B gets 9, capped by cores.
    """
    cores = usable_cores() if cores is None else cores
    wanted = model_config.num_parameters() // PARAMS_PER_THREAD
    return max(1, min(cores, wanted))


def pin_cpu_threads(model_config: ModelConfig, threads: int | None = None) -> int:
    """Set torch's intra-op threads for this model and return the count.

    `threads` wins when given; else OMP_NUM_THREADS when the user set it (torch already read it);
    else default_cpu_threads. Call it before the first forward, on CPU runs only.
    """
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return torch.get_num_threads()
    n = default_cpu_threads(model_config) if threads is None else threads
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n
