"""Run a function on N local processes joined in one `torch.distributed` group (gloo on CPU).

`run_ranks(fn, 4, args)` starts 4 processes on 127.0.0.1 at a free port, calls
`fn(rank, world_size, *args)` in each after `init_process_group`, and returns the ranks' return
values in rank order. What the tests, the benchmark and notebook 12 use to try expert
parallelism on a laptop; on a GPU host pass backend="nccl" (one GPU per rank).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from minirt.ports import free_port


def _worker(rank, world_size, port, backend, threads, fn, args, folder) -> None:
    torch.set_num_threads(threads)  # N processes on few cores: extra threads only contend
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)  # fmt: skip
    # Every rank's connections are up before any rank can close its own: without this a rank
    # whose fn does no collective work can tear down while another still connects to it (gloo:
    # "connectFullMesh ... Connection closed by peer").
    dist.barrier()
    try:
        result = fn(rank, world_size, *args)
        # a file, not a queue: a queue's pipe fills up and blocks a rank that returns tensors
        torch.save(result, os.path.join(folder, f"{rank}.pt"))  # tensors and plain data only
    finally:
        dist.destroy_process_group()


def run_ranks(
    fn: Callable[..., Any],
    world_size: int,
    args: tuple = (),
    backend: str = "gloo",
    threads: int = 1,
    start_method: str | None = None,
) -> list[Any]:
    """fn(rank, world_size, *args) on `world_size` processes; their results, by rank. A result
    is tensors and plain data (numbers, strings, lists, dicts): it travels through
    `torch.load(weights_only=True)`, which refuses anything else.

    start_method: "fork" by default for gloo on Linux (children inherit the imported modules:
    ~0.5 s to start instead of ~5 s each), "spawn" for NCCL (CUDA does not survive a fork) and
    elsewhere; under spawn, fn must be importable (a module-level function).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if start_method is None:
        fork = backend == "gloo" and "fork" in mp.get_all_start_methods()
        start_method = "fork" if fork else "spawn"
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_worker, nprocs=world_size, join=True, start_method=start_method,
                           args=(world_size, free_port(), backend, threads, fn, args,
                                 folder))  # fmt: skip
        # weights_only: tensors, numbers, strings, lists and dicts come back, nothing is
        # unpickled into code (return `to_dict()`s, not objects)
        return [torch.load(os.path.join(folder, f"{r}.pt"), weights_only=True)
                for r in range(world_size)]  # fmt: skip
