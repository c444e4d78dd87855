"""Nsight Compute numbers for one launch of each attention kernel, kept as JSON (CUDA + ncu).

`python -m minirt.bench ncu` runs `ncu` on `python -m minirt.bench kernels --once decode` (and
prefill) with the SpeedOfLight, Occupancy, LaunchStats, MemoryWorkloadAnalysis and
WarpStateStats sections plus the stall reasons, and keeps every metric as a row, so notebook 05
can show why a kernel runs at the speed it does (DRAM throughput, achieved occupancy and what
limits it, registers per thread, what its warps wait for) on any machine.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from typing import Any

from minirt.bench.cli import add_out

KERNELS = {"decode": "_decode_split_kernel", "prefill": "_prefill_kernel"}
SECTIONS = ("SpeedOfLight", "Occupancy", "LaunchStats", "MemoryWorkloadAnalysis", "WarpStateStats")
# Why warps did not issue: for each stall reason, warps stalled on it per issued instruction
# (the breakdown Nsight Compute draws in its Warp State Statistics section)
STALL_METRICS = r"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"


def _number(text: str) -> float | str:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return text


def parse_csv(text: str, kernel: str) -> list[dict[str, Any]]:
    """Rows of `ncu --csv --page details` output (ncu's own ==PROF== lines are skipped)."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    if not lines:
        raise ValueError("no CSV rows in the ncu output; did ncu profile any kernel?")
    rows = []
    for r in csv.DictReader(io.StringIO("\n".join(lines))):
        if not r.get("Metric Name"):
            continue  # a rule's advice, not a metric
        rows.append({"name": "ncu_metric", "kernel": kernel, "section": r["Section Name"],
                     "metric": r["Metric Name"], "unit": r["Metric Unit"],
                     "value": _number(r["Metric Value"])})  # fmt: skip
    return rows


def measure(which=("decode", "prefill")) -> list[dict[str, Any]]:
    rows = []
    for k in which:
        cmd = ["ncu", "--target-processes", "all", "-k", f"regex:{KERNELS[k]}", "-c", "1",
               *[a for s in SECTIONS for a in ("--section", s)], "--metrics", STALL_METRICS,
               "--csv", "--page", "details",
               sys.executable, "-m", "minirt.bench", "kernels", "--once", k]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows += parse_csv(out, KERNELS[k])
    return rows


def ncu_version() -> str:
    out = subprocess.run(["ncu", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def add_parser(topics) -> None:
    p = topics.add_parser(
        "ncu",
        help="(CUDA + Nsight Compute) ncu metrics of one decode and one prefill attention launch",
    )
    add_out(p)


def main(args, command: str) -> Any:
    import torch

    from minirt.bench.timing import gpu_device
    from minirt.results import write_results

    rows = measure()
    config = {
        "gpu": torch.cuda.get_device_name(),
        "ncu": ncu_version(),
        "shapes": "decode: 64 x 4096 tokens; prefill: 4 x 4096 causal; bf16",
    }
    return write_results("ncu", gpu_device(), rows, args.out, command, config=config)
