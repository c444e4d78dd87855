"""A step's Chrome trace read back into lanes: top-level host ops, runtime calls, GPU kernels."""

import pytest

from minirt.tools.step_timeline import (
    rows_by_mode,
    timeline_rows,
    timeline_summary,
    trace_decode_step,
)


def _x(cat: str, name: str, ts: float, dur: float, tid: int = 1) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "tid": tid, "pid": 1}


def test_host_ops_are_drawn_at_the_top_level_and_runtime_calls_and_kernels_in_their_lanes():
    events = [
        {"ph": "M", "name": "process_name", "args": {}},  # metadata: not drawn
        _x("cpu_op", "aten::linear", 100, 50),
        _x("cpu_op", "aten::addmm", 110, 30),  # inside aten::linear
        _x("cuda_runtime", "cudaLaunchKernel", 120, 5),
        _x("kernel", "gemm", 130, 40, tid=7),
        _x("cpu_op", "aten::add", 160, 10),
        _x("python_function", "forward", 90, 100),  # not a lane
    ]
    rows = timeline_rows(events)
    assert [(r["lane"], r["name"], r["start_us"]) for r in rows] == [
        ("CPU op", "aten::linear", 0.0),
        ("CPU → CUDA runtime", "cudaLaunchKernel", 20.0),
        ("GPU kernel", "gemm", 30.0),
        ("CPU op", "aten::add", 60.0),
    ]
    summary = {s["lane"]: s for s in timeline_summary(rows)}
    assert summary["CPU op"]["busy_us"] == 60.0  # 50 + 10, the nested addmm not counted twice
    assert summary["GPU kernel"]["busy share"] == pytest.approx(40 / 70)


def test_one_decode_step_on_the_cpu_has_host_ops_only_and_leaves_the_engine_idle():
    from minirt import LLM

    llm = LLM(device="cpu")
    rows = timeline_rows(trace_decode_step(llm, batch=2))
    assert {r["lane"] for r in rows} == {"CPU op"}
    assert any(r["name"] == "aten::linear" for r in rows)
    assert not llm.scheduler.has_unfinished()
    assert llm.block_manager.num_free_blocks == llm.num_blocks


def test_a_committed_timeline_run_reads_back_per_mode_as_timeline_rows():
    rows = [{"lane": "GPU kernel", "name": "k", "start_us": t, "dur_us": 1.0} for t in (0.0, 2.0)]
    record = {"results": [{"name": "step_event", "mode": m, "batch": 1, "op": r["name"],
                           "lane": r["lane"], "start_us": r["start_us"], "dur_us": r["dur_us"]}
                          for m in ("eager", "graphs") for r in rows]}  # fmt: skip
    by_mode = rows_by_mode(record)
    assert by_mode == {"eager": rows, "graphs": rows}
    assert timeline_summary(by_mode["eager"])[0]["busy_us"] == 2.0
    assert rows_by_mode(None) == {}
