"""The MoE page: its router numbers are minirt.moe's, its timelines minirt.tools.moe's, and both
follow the widgets; and vizlib/moe_page.py's frames.

References are computed here from minirt directly (the demo recipe's block routed with
`MoEBlock.route`, `router_stats`, `layer_time`), never from the page's own helpers.
"""

import pandas as pd
import pyarrow as pa
import pytest
import torch

from minirt.moe import router_stats
from minirt.moe.demo import Recipe, build, ep_worker
from minirt.moe.launch import run_ranks
from minirt.tools.moe import DEEPSEEK_V3, QWEN3_30B_A3B, Fixes, layer_time
from vizlib import moe_page as mp

PAGE = "pages/10_MoE.py"


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def frames(at) -> list[pd.DataFrame]:
    return [pa.ipc.open_stream(d.data.data).read_pandas()
            for chart in at.get("vega_lite_chart") for d in chart.proto.datasets]  # fmt: skip


def frame_with(at, column: str, value=None) -> pd.DataFrame:
    """The one chart dataset with `column` (and, if given, `value` in it)."""
    (found,) = [
        f for f in frames(at) if column in f and (value is None or (f[column] == value).any())
    ]
    return found


def reference_stats(experts=16, k=2, tokens=32, ranks=4, skew=0.0, factor=None, seed=0):
    block, x = build(Recipe(hidden=64, intermediate=32, num_experts=experts, top_k=k,
                            num_tokens=tokens, skew=skew, seed=seed))  # fmt: skip
    with torch.no_grad():
        chosen = block.route(x).experts
    return router_stats(chosen, experts, factor, ranks)


@pytest.fixture
def page(open_page):
    return ok(open_page(PAGE))


def test_default_router_numbers_are_minirt_moes(page, metric):
    s = reference_stats()
    assert metric(page, "Expert imbalance") == f"{s.imbalance:.2f}"
    assert metric(page, "Rank imbalance") == f"{s.rank_imbalance:.2f}"
    # what really leaves each rank in the expert-parallel run of the same recipe (4 processes)
    recipe = Recipe(hidden=64, intermediate=32, num_experts=16, top_k=2, num_tokens=32)
    sent = [r["stats"]["send_rows"] for r in run_ranks(ep_worker, 4, (recipe,))]
    remote = sum(sum(row) - row[q] for q, row in enumerate(sent)) / (32 * 2)
    assert metric(page, "Rows leaving their rank") == f"{remote:.0%}"
    assert metric(page, "Dropped rows") == "—"
    loads = frame_with(page, "rows").sort_values("expert")
    assert loads["rows"].tolist() == s.tokens_per_expert
    assert loads["rank"].tolist() == [f"rank {e // 4}" for e in range(16)]


def test_a_capacity_drops_what_router_stats_counts_and_the_flow_dashes_it(page, metric):
    at = page
    at.slider(key="moe_skew").set_value(1.0)
    at.toggle(key="moe_use_capacity").set_value(True).run()  # enables the factor's slider
    at.slider(key="moe_capacity").set_value(1.0).run()
    ok(at)
    s = reference_stats(skew=1.0, factor=1.0)
    assert s.dropped > 0 and metric(at, "Dropped rows") == str(s.dropped)
    flow = frame_with(at, "kept")  # the lines' data (the labels are another dataset)
    block, x = build(Recipe(hidden=64, intermediate=32, num_experts=16, top_k=2, num_tokens=32,
                            skew=1.0))  # fmt: skip
    block.capacity_factor = 1.0
    with torch.no_grad():
        keep = block.route(x).keep[: mp.SHOWN_TOKENS]
    # the flow chart's data is long: each assignment twice (token end, expert end)
    assert (flow["kept"] == "dropped").sum() == 2 * int((~keep).sum())


def test_changing_experts_and_ranks_reroutes(page, metric):
    at = page
    at.select_slider(key="moe_experts").set_value(8)
    at.slider(key="moe_top_k").set_value(4).run()
    at.select_slider(key="moe_ranks").set_value(2).run()
    ok(at)
    s = reference_stats(experts=8, k=4, ranks=2)
    assert metric(at, "Rank imbalance") == f"{s.rank_imbalance:.2f}"


def test_timelines_are_layer_time_with_one_and_two_micro_batches(page, metric):
    at = page
    imbalance = float(at.slider(key="moe_imbalance").value)
    fixes = dict(fp8_dispatch=True, hierarchical=True)
    one = layer_time(DEEPSEEK_V3, 128, Fixes(**fixes), imbalance, 4096)
    two = layer_time(DEEPSEEK_V3, 128, Fixes(**fixes, micro_batches=2), imbalance, 4096)
    assert metric(at, "Layer, 1 micro-batch") == f"{one['total'] * 1e6:,.0f} µs"
    assert metric(at, "Layer, 2 micro-batches") == f"{two['total'] * 1e6:,.0f} µs"
    assert metric(at, "Overlap speedup") == f"{one['total'] / two['total']:.2f}×"
    timeline = frame_with(at, "run", "1 micro-batch")  # not the measured CPU run's lanes
    assert set(timeline["run"]) == {"1 micro-batch", "2 micro-batches"}
    mine = timeline[timeline["run"] == "2 micro-batches"]
    assert mine["end"].max() == pytest.approx(two["total"] * 1e6)
    assert set(mine["micro_batch"]) == {0, 1}
    at.toggle(key="moe_fp8").set_value(False).run()  # BF16 dispatch: more bytes, slower
    slower = layer_time(DEEPSEEK_V3, 128, Fixes(hierarchical=True), imbalance, 4096)
    assert metric(ok(at), "Layer, 1 micro-batch") == f"{slower['total'] * 1e6:,.0f} µs"
    assert slower["total"] > one["total"]
    at.selectbox(key="moe_deployment").set_value("qwen3-30b-a3b").run()
    qwen = layer_time(QWEN3_30B_A3B, 128, Fixes(hierarchical=True), imbalance, 4096)
    assert metric(ok(at), "Layer, 1 micro-batch") == f"{qwen['total'] * 1e6:,.0f} µs"


def test_measured_frame_reads_the_ep_block_rows_per_rank():
    record = {"results": [
        {"experiment": "all_to_all", "world_size": 4, "bytes_per_rank": 1024, "ms": 1.0},
        {"experiment": "ep_block", "world_size": 4, "micro_batches": 2, "fp8_dispatch": False,
         "recv_rows": [3, 1, 0, 0], "phases": [
             [{"phase": "dispatch", "micro_batch": 0, "start_ms": 0.0, "end_ms": 1.5}],
             [{"phase": "combine", "micro_batch": 1, "start_ms": 1.0, "end_ms": 2.0}], [], []]},
    ]}  # fmt: skip
    frame = mp.measured_frame(record, 4, 2)
    assert frame[["lane", "op", "start", "end"]].values.tolist() == [
        ["rank 0 · mb 0", "dispatch", 0.0, 1.5],
        ["rank 1 · mb 1", "combine", 1.0, 2.0],
    ]
    assert mp.measured_frame(record, 4, 1).empty


def test_measured_frame_skips_rows_timed_without_phases():
    """A GPU run's `phase_times` False row (one "total" phase) is not a timeline: the phased row
    of the same configuration is drawn, wherever it sits in the file, and none is drawn without."""
    total = {
        "experiment": "ep_block",
        "world_size": 2,
        "micro_batches": 1,
        "fp8_dispatch": False,
        "phase_times": False,
        "recv_rows": [5, 3],
        "phases": [[{"phase": "total", "micro_batch": -1, "start_ms": 0.0, "end_ms": 2.0}]] * 2,
    }
    phased = {**total, "phase_times": True, "phases": [
        [{"phase": "experts", "micro_batch": 0, "start_ms": 0.5, "end_ms": 1.5}], []]}  # fmt: skip
    frame = mp.measured_frame({"results": [total, phased]}, 2, 1)
    assert frame[["lane", "op", "start", "end"]].values.tolist() == [
        ["rank 0", "experts", 0.5, 1.5]
    ]
    assert mp.measured_frame({"results": [total]}, 2, 1).empty


def test_the_measured_section_draws_the_committed_cpu_run(page):
    path, record = mp.newest_cpu_run()
    if record is None:
        pytest.skip("no bench/results/cpu/moe-*.json committed")
    at = page
    at.radio(key="moe_measured_mb").set_value(1).run()
    lanes = [f for f in frames(ok(at)) if "lane" in f and f["lane"].str.startswith("rank").any()]
    assert lanes and set(lanes[0]["lane"]) == {f"rank {r}" for r in range(4)}


def test_every_rank_and_token_gets_room_for_its_label():
    lanes = [f"rank {r}" for r in range(8)]
    rows = [{"lane": lane, "op": "experts", "micro_batch": 0, "start": 0.0, "end": 1.0}
            for lane in lanes]  # fmt: skip
    chart = mp.timeline_chart(mp.timeline_frame(rows, "run", scale=1.0)).to_dict()
    assert chart["height"] == {"step": 22}  # a lane's row of pixels: no label dropped
    routed = {"experts": [[0, 1]] * 24, "weights": [[0.5, 0.5]] * 24, "keep": [[True, True]] * 24}
    flow = mp.flow_chart(mp.flow_frame(routed, 16, 4), 24, 16).to_dict()
    assert flow["height"] >= 20 * 24
