"""`python -m minirt.bench transfers`: host<->device copies, streams and KV swap on a GPU.

Runs every experiment of `minirt.transfer` (each a `Program` the simulator can also play) and the
KV swap of a Qwen3-0.6B-shaped pool, and writes two files:
- `<out>/<gpu>/transfers-<date>.json`: one row per measurement, the programs themselves, and a
  `calibration` block (the few numbers `Hardware.from_measurements` fits the simulator to);
- `<out>/<gpu>/transfers-trace-<date>.json`: every experiment's measured timeline, as a
  minirt trace of 'interval' events (run = the program's name), for the Streams page.
Targets (issue 6): swap-out and swap-in >= 85 % of the pinned bandwidth of the same run; copy and
compute on two streams <= 1.1 x max(copy alone, compute alone).
"""

from __future__ import annotations

import time
from pathlib import Path
from statistics import median
from typing import Any

import torch
from tqdm.auto import tqdm

from minirt import transfer as tr
from minirt.bench.cli import add_no_progress, add_out, progress
from minirt.tools.streams import Program

SWAP_SHAPE = dict(layers=28, block_size=16, kv_heads=8, head_dim=128)  # Qwen3-0.6B, bf16


def _row(experiment: str, program: Program, result: tr.RunResult, **fields) -> dict[str, Any]:
    return {"experiment": experiment, "program": program.to_dict(),
            "total_ms": result.timeline.total_ms, "runs_ms": result.runs_ms,
            "stale": result.stale, **fields}  # fmt: skip


def bandwidth_rows(sizes=tr.SIZES, progress=True) -> tuple[list[dict], list[tr.RunResult]]:
    rows, results = [], []
    cases = [(d, pinned, n) for d in ("h2d", "d2h") for pinned in (True, False) for n in sizes]
    for direction, pinned, nbytes in tqdm(cases, desc="copy bandwidth", disable=not progress):
        program = tr.copy_program(direction, nbytes, pinned)
        result = tr.run_cuda(program, reps=3 if nbytes >= 256 * tr.MiB else 7)
        copy = result.timeline.of("copy")
        rows.append(_row("bandwidth", program, result, direction=direction,
                         memory="pinned" if pinned else "pageable", nbytes=nbytes,
                         copy_ms=copy.ms, gbps=nbytes / (copy.ms * 1e6)))  # fmt: skip
        results.append(result)
    return rows, results


def matmul_row() -> tuple[dict, tr.RunResult]:
    """The compute rate the simulator uses: 20 back-to-back 4096^3 bf16 matmuls."""
    program = Program("matmul alone")
    program.kernel("compute", flops=2.0 * tr.MATMUL_N**3 * 20)
    program.synchronize()
    result = tr.run_cuda(program)
    ms = result.timeline.of("compute").ms
    flops = 2.0 * tr.MATMUL_N**3 * 20
    return _row("matmul", program, result, compute_ms=ms, tflops=flops / (ms * 1e9)), result


def hold_rows() -> tuple[list[dict], list[tr.RunResult]]:
    rows, results = [], []
    for direction in ("h2d", "d2h"):
        for pinned in (True, False):
            for nb in (True, False):
                program = tr.hold_program(direction, pinned, nb)
                result = tr.run_cuda(program)
                blocked = [iv for iv in result.timeline.intervals
                           if iv.lane == "cpu" and iv.name == "copy"]  # fmt: skip
                rows.append(_row("cpu_hold", program, result, direction=direction,
                                 memory="pinned" if pinned else "pageable", non_blocking=nb,
                                 cpu_held_ms=sum(iv.ms for iv in blocked),
                                 copy_ms=result.timeline.of("copy").ms))  # fmt: skip
                results.append(result)
    return rows, results


def overlap_rows(nbytes: int = 256 * tr.MiB) -> tuple[list[dict], list[tr.RunResult]]:
    """Copy alone, compute alone (sized to about the copy's time), then both on one and on two
    streams."""
    copy = tr.copy_program("h2d", nbytes, pinned=True)
    copy_alone = tr.run_cuda(copy)
    one = Program("one matmul")
    one.kernel("compute", flops=2.0 * tr.MATMUL_N**3).synchronize()
    per_matmul = tr.run_cuda(one).timeline.of("compute").ms
    matmuls = max(1, round(copy_alone.timeline.of("copy").ms / per_matmul))
    alone = Program("compute alone")
    alone.kernel("compute", flops=2.0 * tr.MATMUL_N**3 * matmuls).synchronize()
    compute_alone = tr.run_cuda(alone)
    copy_ms, compute_ms = copy_alone.timeline.of("copy").ms, compute_alone.timeline.of("compute").ms
    rows, results = [], [copy_alone, compute_alone]
    rows.append(_row("overlap", copy, copy_alone, case="copy alone", nbytes=nbytes))
    rows.append(_row("overlap", alone, compute_alone, case="compute alone", matmuls=matmuls))
    for two in (False, True):
        program = tr.overlap_program(nbytes, matmuls, two_streams=two)
        result = tr.run_cuda(program)
        total = result.timeline.total_ms
        rows.append(_row("overlap", program, result, case="two streams" if two else "one stream",
                         nbytes=nbytes, matmuls=matmuls, copy_alone_ms=copy_ms,
                         compute_alone_ms=compute_ms,
                         ratio_to_max=total / max(copy_ms, compute_ms),
                         overlap_ms=result.timeline.overlap_ms("h2d", "kernel")))  # fmt: skip
        results.append(result)
    return rows, results


def correctness_rows() -> tuple[list[dict], list[tr.RunResult]]:
    rows, results = [], []
    for fixed in (False, True):
        program = tr.stale_read_program(fixed)
        result = tr.run_cuda(program)
        rows.append(_row("stale_read", program, result, fixed=fixed))
        results.append(result)
    for mode in ("one stream", "two streams", "two streams + event"):
        program = tr.stream_order_program(mode)
        result = tr.run_cuda(program)
        rows.append(_row("stream_order", program, result, mode=mode))
        results.append(result)
    return rows, results


def swap_rows(num_blocks: int = 256, reps: int = 5) -> list[dict[str, Any]]:
    """Swap `num_blocks` scattered blocks of a Qwen3-0.6B-shaped pool out and back, timed."""
    from minirt.kv.swap import SwapSpace

    s = SWAP_SHAPE
    pool = torch.randn(2, s["layers"], 4 * num_blocks, s["block_size"], s["kv_heads"],
                       s["head_dim"], device="cuda", dtype=torch.bfloat16)  # fmt: skip
    swap = SwapSpace(pool, num_blocks)
    nbytes = num_blocks * pool[:, :, 0].numel() * pool.element_size()
    g = torch.Generator().manual_seed(0)
    picks = [torch.randperm(pool.shape[2], generator=g)[:num_blocks].tolist() for _ in range(reps)]
    rows = []
    for direction in ("out", "in"):
        times = []
        for rep, blocks in enumerate([picks[0]] + picks):  # the first is a warm-up
            # Wall time from the call to the copy's event: the Python and the gather count too.
            if direction == "out":
                start = time.perf_counter()
                host, done = swap.swap_out(blocks)
                done.synchronize()
                elapsed = time.perf_counter() - start
                swap.release(host)
            else:
                host, done = swap.swap_out(blocks)
                done.synchronize()
                start = time.perf_counter()
                swap.swap_in(host, blocks).synchronize()
                elapsed = time.perf_counter() - start
            if rep:
                times.append(elapsed * 1e3)
        ms = median(times)
        rows.append({"experiment": "swap", "direction": direction, "blocks": num_blocks,
                     "nbytes": nbytes, "block_bytes": nbytes // num_blocks, "ms": ms,
                     "gbps": nbytes / (ms * 1e6), "runs_ms": times})  # fmt: skip
    return rows


def calibration(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The few measurements the simulator is fitted to (`Hardware.from_measurements`):
    - pinned bandwidth: the largest copy;
    - pageable (staging) bandwidth: all copies >= 64 MiB together (pageable copies are noisy:
      the CPU's memcpy shares a machine; one size alone can be off by 15 %);
    - latency: the smallest pinned copy; ramp: the 4 MiB pinned copies (a DMA starts slow);
    - compute: the matmul row."""
    bw = [r for r in rows if r["experiment"] == "bandwidth"]
    big, small, ramp = max(r["nbytes"] for r in bw), min(r["nbytes"] for r in bw), 4 * tr.MiB

    def pick(direction, memory, size=None, at_least=0):
        return [r for r in bw if r["direction"] == direction and r["memory"] == memory
                and (r["nbytes"] == size if size else r["nbytes"] >= at_least)]  # fmt: skip

    def gbps(found):
        return sum(r["nbytes"] for r in found) / sum(r["copy_ms"] * 1e6 for r in found)

    latency_ms = min(r["copy_ms"] for r in bw if r["nbytes"] == small and r["memory"] == "pinned")
    ramp_ms = median(r["copy_ms"] for d in ("h2d", "d2h") for r in pick(d, "pinned", ramp))
    matmul = next(r for r in rows if r["experiment"] == "matmul")
    return {
        "pinned_gbps": {d: gbps(pick(d, "pinned", big)) for d in ("h2d", "d2h")},
        "pageable_gbps": {
            d: gbps(pick(d, "pageable", at_least=64 * tr.MiB)) for d in ("h2d", "d2h")
        },
        "copy_latency_us": latency_ms * 1e3,
        "ramp_bytes": ramp,
        "ramp_gbps": ramp / ((ramp_ms - latency_ms) * 1e6),
        "matmul_tflops": matmul["tflops"],
        "from": f"pinned {big} B; pageable >= 64 MiB; latency {small} B pinned; ramp {ramp} B "
        "pinned; the matmul row",
    }


def targets(rows: list[dict[str, Any]], cal: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r["experiment"] == "swap":
            pinned = cal["pinned_gbps"]["d2h" if r["direction"] == "out" else "h2d"]
            out.append({"experiment": "target", "name": f"swap {r['direction']} / pinned",
                        "value": r["gbps"] / pinned, "goal": ">= 0.85",
                        "met": r["gbps"] / pinned >= 0.85})  # fmt: skip
        if r["experiment"] == "overlap" and r.get("case") == "two streams":
            out.append({"experiment": "target", "name": "overlapped / max(copy, compute)",
                        "value": r["ratio_to_max"], "goal": "<= 1.1",
                        "met": r["ratio_to_max"] <= 1.1})  # fmt: skip
    return out


def run(out_dir, command: str, progress: bool = True) -> Path:
    from minirt.bench.timing import gpu_device
    from minirt.results import machine_info, write_results
    from minirt.trace import Recorder

    rows, results = bandwidth_rows(progress=progress)
    row, result = matmul_row()
    rows.append(row)
    results.append(result)
    for part in (hold_rows, overlap_rows, correctness_rows):
        more_rows, more_results = part()
        rows += more_rows
        results += more_results
    rows += swap_rows()
    cal = calibration(rows)
    rows += targets(rows, cal)
    name = torch.cuda.get_device_name()
    machine = {**machine_info(), "gpu": name, "cuda": torch.version.cuda}
    config = {"gpu": name, "calibration": cal, "swap_shape": SWAP_SHAPE, "sizes": list(tr.SIZES)}
    path = write_results("transfers", gpu_device(), rows, out_dir, command, machine, config)
    recorder = Recorder({"results": path.name, "gpu": name, "what": "measured with CUDA events"})
    for result in results:
        for event in result.timeline.to_events():
            recorder.record(event)
    recorder.save(path.with_name(path.name.replace("transfers-", "transfers-trace-")))
    return path


def summary(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        e = r["experiment"]
        if e == "bandwidth" and r["nbytes"] in (4 * tr.KiB, tr.MiB, 64 * tr.MiB, tr.GiB):
            lines.append(f"{r['direction']} {r['memory']:8} {r['nbytes']:>11,} B "
                         f"{r['copy_ms']:9.3f} ms {r['gbps']:6.1f} GB/s")  # fmt: skip
        elif e == "cpu_hold":
            what = f"hold {r['direction']} {r['memory']:8} non_blocking={r['non_blocking']!s:5}"
            lines.append(f"{what} CPU held {r['cpu_held_ms']:.3f} ms (copy {r['copy_ms']:.2f} ms)")
        elif e in ("overlap", "stale_read", "stream_order"):
            lines.append(f"{r['program']['name']:32} {r['total_ms']:8.3f} ms stale={r['stale']}")
        elif e in ("swap", "target", "matmul"):
            lines.append(str({k: v for k, v in r.items() if k not in ("program", "runs_ms")}))
    return "\n".join(lines)


def add_parser(topics) -> None:
    p = topics.add_parser(
        "transfers",
        help="(CUDA) pinned vs pageable copies, non_blocking, two streams, stale reads, KV swap",
        description="Every minirt.transfer experiment (copy bandwidth 4 KiB-1 GiB both ways, "
        "pinned and pageable; CPU hold time of non_blocking; copy-compute overlap on one and two "
        "streams; the stale-read and stream-order bugs and their fixes) and KV swap throughput. "
        "Writes OUT/<gpu>/transfers-<date>.json and the timelines as transfers-trace-<date>.json.",
    )
    add_out(p)
    add_no_progress(p)


def main(args, command: str) -> Path:
    from minirt.results import load_results

    path = run(args.out, command, progress=progress(args))
    print(summary(load_results(path)["results"]))
    return path
