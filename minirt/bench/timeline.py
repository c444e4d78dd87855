"""`python -m minirt.bench timeline` (CUDA): one decode step as a timeline, eager and replayed.

Runs `minirt.tools.step_timeline.trace_decode_step` on the Qwen3-0.6B-shaped model (random bf16
weights, nothing downloaded) at batch 1, once with every kernel launched from Python (eager) and
once replaying the step's CUDA graph, and keeps every event of the step as a row: its lane (host
operator, host call into the CUDA runtime, GPU kernel), name, start and duration. Notebook 05
draws the two on one axis, so the host's launch work and the GPU's idle gaps are visible on any
machine.
"""

from __future__ import annotations

import tempfile
from typing import Any

from minirt.bench.cli import add_out

BATCH = 1


def measure(batch: int = BATCH) -> list[dict[str, Any]]:
    from minirt import LLM
    from minirt.bench.roofline import qwen3_06b_checkpoint
    from minirt.tools.step_timeline import timeline_rows, trace_decode_step

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        qwen3_06b_checkpoint(folder)
        llm = LLM(folder, device="cuda", gpu_memory_utilization=0.3)
        graphs = llm.runner.graphs
        for mode in ("eager", "graphs"):
            llm.runner.graphs = graphs if mode == "graphs" else None
            trace_decode_step(llm, batch)  # warm-up: first launches, allocator, profiler
            for r in timeline_rows(trace_decode_step(llm, batch)):
                op = r.pop("name")
                rows.append({"name": "step_event", "mode": mode, "batch": batch, "op": op, **r})
        llm.runner.graphs = graphs
    return rows


def add_parser(topics) -> None:
    p = topics.add_parser(
        "timeline",
        help="(CUDA) one decode step's host operators, CUDA calls and kernels, eager and graphed",
    )
    add_out(p)


def main(args, command: str) -> Any:
    import torch

    from minirt.bench.timing import gpu_device
    from minirt.results import write_results

    rows = measure()
    config = {"gpu": torch.cuda.get_device_name(), "model": "qwen3-0.6b shape, random bf16",
              "batch": BATCH, "prompt_len": 32}  # fmt: skip
    return write_results("timeline", gpu_device(), rows, args.out, command, config=config)
