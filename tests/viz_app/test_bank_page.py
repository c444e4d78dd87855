"""The Bank conflicts page: minirt.tools.bank.simulate on the sidebar's access, Nsight Compute
beside it for a measured pattern, the SGEMM series; and the data shaping in vizlib/bank_page.py.

The ncu and SGEMM tests read the committed `bench/results/*/bank-*.json` and `smem-gemm-*.json`
(skipped cleanly when none is committed); the rest need no results.
"""

import pandas as pd
import pyarrow as pa
import pytest

from minirt.results import load_results
from minirt.tools import bank
from minirt.tools.results import find_results
from vizlib import bank_page as bp

PAGE = "pages/07_Bank_conflicts.py"
RUNS = find_results(("bank", "smem-gemm"))  # newest first
GPUS = list(dict.fromkeys(f.device for f in RUNS))
GPU = "h100" if "h100" in GPUS else (GPUS[0] if GPUS else None)  # what the page opens on


def newest(topic, gpu=GPU):
    return next((f.path for f in RUNS if f.topic == topic and f.device == gpu), None)


BANK, GEMM = newest("bank"), newest("smem-gemm")


def chart_frames(at, i: int) -> list[pd.DataFrame]:
    """The data of the page's i-th chart, one frame per dataset (as the browser gets them)."""
    chart = at.get("vega_lite_chart")[i]
    return [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]


def shown(at, metric) -> dict[str, str]:
    return {label: metric(at, label) for label in ("Wavefronts", "Ideal", "Conflicts", "n-way")}


def captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


def set_number(at, key: str, value: int):
    at.number_input(key=key).set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]


# ---------------------------------------------------------------- the page


def test_page_metrics_equal_simulate_for_the_same_settings(open_page, metric):
    at = open_page(PAGE)
    at.selectbox(key="bank_width").set_value(8).run()
    set_number(at, "bank_cols", 16)
    set_number(at, "bank_pad", 2)
    settings = bp.Settings(access_bytes=8, cols=16, pad=2)
    expected = bp.metric_values(bank.simulate(*bp.access_of(settings)))
    assert shown(at, metric) == expected


def test_padding_a_32x32_fp32_column_by_one_removes_every_conflict(open_page, metric):
    at = open_page(PAGE)
    assert metric(at, "Conflicts") == "31"  # the default: column 3 of a 32 x 32 fp32 tile
    set_number(at, "bank_pad", 1)
    assert metric(at, "Conflicts") == "0" and metric(at, "Wavefronts") == "1"


def test_ncu_value_is_shown_for_a_measured_pattern_and_not_otherwise(open_page, metric):
    if BANK is None:
        pytest.skip("no bench/results/*/bank-*.json is committed")
    rows = {r["pattern"]: r for r in load_results(BANK)["results"]}
    at = open_page(PAGE)  # the default access is ld32_tile_column
    assert metric(at, "ncu wavefronts") == str(rows["ld32_tile_column"]["wavefronts"])
    at.selectbox(key="bank_access").set_value("pattern").run()
    at.selectbox(key="bank_pattern").set_value("ld64_pairs_same").run()
    assert metric(at, "ncu wavefronts") == str(rows["ld64_pairs_same"]["wavefronts"])
    at.selectbox(key="bank_access").set_value("column").run()
    set_number(at, "bank_pad", 3)  # not a measured pattern
    assert "ncu wavefronts" not in [m.label for m in at.metric]
    assert "Not a measured pattern" in captions(at)


def test_heatmap_has_one_row_per_thread(open_page):
    at = open_page(PAGE)
    (frame,) = chart_frames(at, 0)
    assert len(frame) == bank.WARP and sorted(frame["thread"]) == list(range(bank.WARP))
    assert frame["conflict"].all()  # 32 threads, one bank


def test_sgemm_chart_lists_every_kernel_of_the_committed_json(open_page):
    if GEMM is None:
        pytest.skip("no bench/results/*/smem-gemm-*.json is committed")
    kernels = [r["kernel"] for r in load_results(GEMM)["results"]]
    at = open_page(PAGE)
    (frame,) = chart_frames(at, 1)
    assert list(frame["kernel"]) == kernels
    table = at.dataframe[-1].value  # the SGEMM table comes last
    assert list(table["kernel"]) == kernels and "racecheck_hazards" in table.columns


def test_the_page_opens_on_the_h100_runs_and_offers_every_gpu(open_page):
    if not GPUS:
        pytest.skip("no bank-*.json or smem-gemm-*.json is committed")
    at = open_page(PAGE)
    picker = at.selectbox(key="bank_gpu")
    assert picker.value == GPU and list(picker.options) == GPUS
    if GEMM is not None:
        assert f"bench/results/{GPU}/{GEMM.name}" in at.markdown[-1].value
    for gpu in GPUS:  # each GPU's own newest SGEMM run, or a caption saying there is none
        picker.set_value(gpu).run()
        assert not at.exception, [e.value for e in at.exception]
        path = newest("smem-gemm", gpu)
        shown = at.markdown[-1].value if path else captions(at)
        assert (path.name if path else f"bench/results/{gpu}/") in shown


def test_missing_results_give_captions_not_a_crash(open_page, metric, monkeypatch, tmp_path):
    monkeypatch.setattr(bp, "results_root", lambda: tmp_path)
    at = open_page(PAGE)
    assert metric(at, "Conflicts") == "31"
    text = captions(at)
    assert "No bank-*.json is committed" in text and "No smem-gemm-*.json is committed" in text
    assert len(at.get("vega_lite_chart")) == 1  # the heatmap, no SGEMM chart


# ---------------------------------------------------------------- vizlib.bank_page


def test_access_of_matches_the_measured_patterns_it_names():
    cases = {
        "ld32_tile_column": bp.Settings(),
        "ld32_tile_column_pad1": bp.Settings(pad=1),
        "st32_tile_column": bp.Settings(op="st"),
        "ld32_tile_row": bp.Settings(access="row"),
        "ld32_transposed_tile": bp.Settings(access="transposed", index=5),
        "ld32_tile_column_swizzled": bp.Settings(swizzle=True),
        "ld32_broadcast_pairs": bp.Settings(access="broadcast", group=2),
        "ld64_tile_column": bp.Settings(access_bytes=8, index=1),
        # float4 reads of a 32-wide fp32 tile padded by 4 floats = 8 float4 + 1 per row
        "ld128_tile_column_pad4": bp.Settings(access_bytes=16, cols=8, index=0, pad=1),
    }
    for name, settings in cases.items():
        assert bp.access_of(settings) == bank.PATTERNS[name], name
    assert (
        bp.access_of(bp.Settings(access="pattern", pattern="ldmatrix_x4_rows128"))
        == (bank.PATTERNS["ldmatrix_x4_rows128"])
    )
    with pytest.raises(ValueError, match="access must be"):
        bp.access_of(bp.Settings(access="diagonal"))


def test_threads_outside_the_tile_are_inactive():
    addresses, _, _ = bp.access_of(bp.Settings(rows=8))
    assert addresses[8:] == [None] * 24
    assert bank.simulate(addresses).wavefronts == 8


@pytest.mark.parametrize("name", list(bank.PATTERNS))
def test_heatmap_passes_add_up_to_simulate_wavefronts(name):
    addresses, width, op = bank.PATTERNS[name]
    frame = bp.heatmap_frame(list(addresses), width, op)
    assert len(frame) == bank.WARP
    active = frame[frame["active"]]
    passes = int((active.groupby("phase")["wavefront"].max() + 1).sum())
    assert passes == bank.simulate(addresses, width, op).wavefronts
    assert active["conflict"].any() == (bank.simulate(addresses, width, op).conflicts > 0)


def test_heatmap_chart_encodes_bank_thread_and_pass():
    frame = bp.heatmap_frame(bank.column_access(32, 0, 16), 16, "ld")
    assert (frame["bank_end"] - frame["bank"] == 4).all()  # a 16-byte access spans 4 banks
    enc = bp.heatmap_chart(frame).to_dict()["encoding"]
    assert (enc["x"]["field"], enc["x2"]["field"], enc["y"]["field"]) == (
        "bank",
        "bank_end",
        "thread",
    )
    assert enc["color"]["field"] == "wavefront"


def test_measured_matches_address_list_width_and_op():
    record = {"results": [{"pattern": "ld32_stride1", "wavefronts": 1, "conflicts": 0}]}
    addresses, width, op = bank.PATTERNS["ld32_stride1"]
    assert bp.measured(record, addresses, width, op)["pattern"] == "ld32_stride1"
    assert bp.measured(record, addresses, width, "st") is None
    assert bp.measured(record, bank.stride_access(3), width, op) is None
    assert bp.measured(None, addresses, width, op) is None


def test_latest_picks_the_newest_file_over_devices(tmp_path):
    for name in [
        "h100/bank-20260101-000000.json",
        "h200/bank-20260201-000000.json",
        "h200/bank-20260201-000000-2.json",
        "h200/bank-notes.json",
        "h200/smem-gemm-20260301-000000.json",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert bp.latest("bank", tmp_path).name == "bank-20260201-000000-2.json"
    assert bp.latest("smem-gemm", tmp_path).name == "smem-gemm-20260301-000000.json"
    assert bp.latest("bank", tmp_path / "missing") is None


def test_sgemm_frame_keeps_the_file_order():
    record = {"results": [{"kernel": "b", "gflops": 1.0}, {"kernel": "a", "ld_conflicts": 3}]}
    frame = bp.sgemm_frame(record)
    assert list(frame["kernel"]) == ["b", "a"] and list(frame.columns) == bp.SGEMM_COLUMNS
    spec = bp.sgemm_chart(frame).to_dict()
    assert spec["encoding"]["y"]["sort"] == ["b", "a"]


def test_sgemm_frame_reads_rows_without_a_dtype_as_fp32_and_colours_each_series():
    record = {"results": [{"kernel": "cublas"}, {"kernel": "tiled"},
                          {"kernel": "cublas_h", "dtype": "fp16"},
                          {"kernel": "tiled_h", "dtype": "fp16"}]}  # fmt: skip
    frame = bp.sgemm_frame(record)
    assert list(frame["dtype"]) == ["fp32", "fp32", "fp16", "fp16"]
    spec = bp.sgemm_chart(frame).to_dict()
    assert spec["encoding"]["color"]["scale"]["domain"] == ["cuBLAS", "fp32", "fp16"]
