"""The profiling helpers read committed results; the live profile runs on the embedded model."""

import pytest

from minirt.bench.ncu import parse_csv
from minirt.tools import profiling

NCU_CSV = """==PROF== Connected to process 1
"ID","Kernel Name","Section Name","Metric Name","Metric Unit","Metric Value","Rule Name"
"0","_decode_split_kernel","GPU Speed Of Light Throughput","DRAM Throughput","%","86.77",""
"0","_decode_split_kernel","Occupancy","Achieved Occupancy","%","36.50",""
"0","_decode_split_kernel","Launch Statistics","Registers Per Thread","register/thread","77",""
"0","_decode_split_kernel","GPU Speed Of Light Throughput","Duration","ns","373,952",""
"0","_decode_split_kernel","SpeedOfLight","","","","SOLBottleneck"
==PROF== Disconnected from process 1
"""


def _gpu_record():
    decode = [
        {"name": "decode", "system": s, "batch": b, "step_ms": ms}
        for s, b, ms in [("minirt-graphs", 1, 1.5), ("minirt-eager", 1, 22.5),
                         ("minirt-graphs", 64, 3.0), ("minirt-eager", 64, 12.0),
                         ("hf-eager", 1, 100.0)]
    ]  # fmt: skip
    profile = {"name": "profile", "mode": "graphs", "steps": 2, "num_kernel_launches": 600,
               "kernels": [{"name": "gemm", "count": 10, "cuda_us": 50.0}]}  # fmt: skip
    return {"results": [*decode, profile]}


def test_ncu_csv_rows_keep_every_metric_as_a_number_and_skip_rule_advice():
    rows = parse_csv(NCU_CSV, "_decode_split_kernel")
    assert len(rows) == 4
    by = {r["metric"]: r["value"] for r in rows}
    assert by["Duration"] == 373952.0 and by["DRAM Throughput"] == 86.77
    with pytest.raises(ValueError, match="no CSV rows"):
        parse_csv("==PROF== nothing", "k")


def test_launch_overhead_pairs_eager_and_graphed_steps_per_batch():
    rows = profiling.launch_overhead(_gpu_record())
    assert [r["batch"] for r in rows] == [1, 64]
    assert rows[0]["speedup"] == pytest.approx(15.0) and rows[1]["speedup"] == pytest.approx(4.0)


def test_kernel_table_is_per_step_and_ncu_metrics_pivot_by_kernel():
    (row,) = profiling.kernel_table(_gpu_record())
    assert row["calls/step"] == 5 and row["us/step"] == 25
    ncu = {"results": parse_csv(NCU_CSV, "_decode_split_kernel")}
    table = profiling.ncu_metrics(ncu, metrics=("DRAM Throughput", "Achieved Occupancy"))
    assert [r["metric"] for r in table] == ["DRAM Throughput", "Achieved Occupancy"]
    assert table[1]["_decode_split_kernel"] == 36.5


def test_checklist_ties_what_it_can_and_says_what_the_run_lacks():
    items = {
        r["optimisation"]: r["measured (H100)"] for r in profiling.checklist(_gpu_record(), None)
    }
    assert items["CUDA graphs"] == "22.5 ms -> 1.50 ms (15x)"
    assert items["fusion"] == "300 kernels per step"
    assert items["coalescing"] == "not in this run"
    assert profiling.checklist(None, None) == []


def test_a_live_profile_of_the_embedded_engine_lists_its_busiest_operators(embedded_llm):
    live = profiling.profile_decode(embedded_llm, batch=2, new_tokens=2, top=5)
    assert len(live["rows"]) == 5 and live["total_us"] > 0
    assert sum(r["share"] for r in live["rows"]) <= 1.0 + 1e-9
    assert embedded_llm.block_manager.num_free_blocks == embedded_llm.num_blocks


def _stalls_csv(values: dict[str, str]) -> str:
    head = '"ID","Kernel Name","Section Name","Metric Name","Metric Unit","Metric Value"'
    rows = [f'"0","k","Command line profiler metrics","{profiling.STALL_PREFIX}{reason}'
            f'{profiling.STALL_SUFFIX}","ratio","{v}"' for reason, v in values.items()]  # fmt: skip
    rows.append('"0","k","Warp State Statistics","Warp Cycles Per Issued Instruction","cycle","4"')
    return "\n".join([head, *rows])


def test_warp_stalls_are_one_kernels_reasons_largest_first_with_their_shares():
    mine = parse_csv(_stalls_csv({"barrier": "0.5", "long_scoreboard": "3", "wait": "0.5"}), "k")
    other = parse_csv(_stalls_csv({"barrier": "9"}), "other")
    ncu = {"results": mine + other}
    stalls = profiling.warp_stalls(ncu, "k")
    assert [r["stall reason"] for r in stalls] == ["long scoreboard", "barrier", "wait"]
    assert stalls[0]["share"] == pytest.approx(0.75) and stalls[1]["warps per issue"] == 0.5
    assert profiling.warp_stalls(ncu, "k", top=1) == stalls[:1]
    assert profiling.warp_stalls(None, "k") == []
