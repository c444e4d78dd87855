"""The Quantization page: the grid and error of an embedded layer as minirt.quant.grid computes
them, activation outliers per layer, and the speed crossover of a quant-*.json (a fixture here,
so the test does not depend on which results are committed); and vizlib/quant_page.py."""

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import torch

from minirt.engine.llm import LLM
from minirt.quant.grid import fake_quant_groups, relative_error
from minirt.quant.linear import target_linears
from vizlib import quant_page as qp

PAGE = "pages/08_Quantization.py"
FIXTURE = Path(__file__).with_name("fixture_quant_results.json")


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return {
        n: m.weight.detach().float() for n, m in target_linears(LLM(device="cpu").model).items()
    }


@pytest.fixture
def no_results(monkeypatch, tmp_path):
    monkeypatch.setattr(qp, "results_root", lambda: tmp_path)


@pytest.fixture
def fixture_results(monkeypatch, tmp_path):
    (tmp_path / "h100").mkdir()
    shutil.copy(FIXTURE, tmp_path / "h100" / "quant-20260101-000000.json")
    monkeypatch.setattr(qp, "results_root", lambda: tmp_path)


def chart_frames(at, i: int) -> list[pd.DataFrame]:
    chart = at.get("vega_lite_chart")[i]
    return [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]


def test_layer_error_is_minirts_for_the_sidebar_settings(open_page, metric, weights, no_results):
    at = open_page(PAGE)
    w = weights["model.layers.0.mlp.down_proj"]  # the default layer
    assert metric(at, "Layer error") == f"{relative_error(w, fake_quant_groups(w, 4, 128)):.2%}"
    at.select_slider(key="quant_bits").set_value(8).run()
    at.toggle(key="quant_sym").set_value(False).run()
    at.selectbox(key="quant_group").set_value(32).run()
    assert not at.exception, [e.value for e in at.exception]
    want = relative_error(w, fake_quant_groups(w, 8, 32, symmetric=False))
    assert metric(at, "Layer error") == f"{want:.2%}"
    assert metric(at, "Bits per weight") == "8.500"


def test_grid_chart_shows_the_worst_group_and_its_levels(open_page, weights, no_results):
    at = open_page(PAGE)
    w = weights["model.layers.0.mlp.down_proj"]
    row, group = qp.worst_group(w, 128)
    assert at.number_input(key="quant_row").value == row
    assert at.number_input(key="quant_group_idx").value == group
    frames = chart_frames(at, 0)
    assert sorted(len(f) for f in frames) == [16, 128]  # 2^4 levels, one group of weights
    assert w.abs().max().item() == pytest.approx(max(f.abs().max().max() for f in frames
                                                     if "w" in f.columns), rel=1e-6)  # fmt: skip


def test_outlier_chart_has_both_sides_of_every_projection(open_page, weights, no_results):
    at = open_page(PAGE)
    (frame,) = chart_frames(at, 2)
    assert len(frame) == 2 * len(weights)
    down = frame[frame["layer"].str.endswith("down_proj")]
    act = down[down["side"] == "activation"]["row_ratio_median"]
    assert act.min() > down[down["side"] == "weight"]["row_ratio_median"].max()


def test_without_results_the_page_says_which_command_makes_them(open_page, no_results):
    at = open_page(PAGE)
    (info,) = at.info
    assert "python -m minirt.bench quant" in info.value and "quant-*.json" in info.value
    assert len(at.get("vega_lite_chart")) == 3  # grid, error, outliers; no speed chart


def test_crossover_of_the_fixture_results(open_page, fixture_results):
    at = open_page(PAGE)
    assert not at.info
    table = at.dataframe[-1].value.set_index("method")
    assert table.loc["w4a16", "beats bf16 at M"] == "1, 16"
    assert table.loc["fp8", "beats bf16 at M"] == "256, 4096"
    (speed,) = chart_frames(at, 3)[:1]
    assert set(speed["method"]) == {"bf16", "w4a16", "fp8"} and len(speed) == 12
    at.selectbox(key="quant_shape").set_value("llama-3-8b/down_proj").run()
    table = at.dataframe[-1].value.set_index("method")
    assert table.loc["w4a16", "beats bf16 at M"] == "1"
    legend = at.caption[-1].value  # every method of the run, described where known
    assert "**bf16**: cuBLAS bf16" in legend and "**fp8**: ours, FP8" in legend
    assert "**w4a16**" in legend


def test_the_legend_says_what_each_method_of_a_run_measures():
    frame = pd.DataFrame({"method": ["bf16", "fp8_fused", "dynamic_scales", "fp8_fused"]})
    lines = qp.method_legend(frame).split("  \n")
    assert len(lines) == 3 and "quantized inside" in lines[1] and "not a GEMM" in lines[2]


# ---------------------------------------------------------------- vizlib.quant_page


def test_gemm_frame_reads_both_row_schemas():
    record = {"results": [
        {"kind": "gemm", "shape": "a/b", "M": 1, "N": 8, "K": 8, "method": "bf16", "ms": 1.0},
        {"experiment": "gemm", "model": "m", "layer": "l", "M": 2, "N": 8, "K": 8,
         "method": "fp8", "ms": 0.5, "speedup_vs_bf16": 2.0},
        {"experiment": "decode", "model": "m", "method": "fp8", "batch": 1},
    ]}  # fmt: skip
    frame = qp.gemm_frame(record)
    assert list(frame["shape"]) == ["a/b", "m/l"] and list(frame["M"]) == [1, 2]
    assert qp.gemm_frame({"results": []}).empty


def test_error_frame_falls_with_bits_for_every_group_size(weights):
    w = weights["model.layers.1.self_attn.o_proj"]
    frame = qp.error_frame(w, symmetric=True)
    for group, g in frame[frame["group"] != "fp8 e4m3 (per row)"].groupby("group"):
        errors = g.sort_values("bits")["error"].tolist()
        assert errors == sorted(errors, reverse=True), group
    assert set(frame["group"]) == {"g32", "g64", "g128", "row", "fp8 e4m3 (per row)"}


def test_group_frame_levels_cover_every_rounded_value(weights):
    w = weights["model.layers.2.mlp.gate_up_proj"]
    values, levels = qp.group_frame(w, 3, 64, False, row=5, group=2)
    assert len(values) == 64 and len(levels) == 8
    assert set(values["rounded"].round(9)) <= set(levels["level"].round(9))
    assert levels["used"].sum() == values["rounded"].round(9).nunique()


def test_the_fullest_run_is_chosen_over_a_newer_partial_rerun(tmp_path):
    import json

    full = {"schema": 1, "topic": "quant", "device": "h100", "date": "2026-01-01T00:00:00",
            "command": "x", "versions": {}, "results": [
                {"experiment": "gemm", "model": "m", "layer": "l", "M": m, "N": 8, "K": 8,
                 "method": meth, "ms": 1.0, "tflops": 1.0, "speedup_vs_bf16": 1.0}
                for m in (1, 16) for meth in ("bf16", "fp8", "int8")]}  # fmt: skip
    partial = dict(full, date="2026-02-01T00:00:00", results=full["results"][:2])
    (tmp_path / "h100").mkdir()
    (tmp_path / "h100" / "quant-20260101-000000.json").write_text(json.dumps(full))
    (tmp_path / "h100" / "quant-20260201-000000.json").write_text(json.dumps(partial))
    paths = qp.runs(tmp_path)
    assert [p.name for p in paths][0] == "quant-20260201-000000.json"  # newest first
    assert paths[qp.fullest(paths)].name == "quant-20260101-000000.json"


def test_every_outlier_measure_has_an_axis_title_that_fits_beside_the_chart():
    assert set(qp.OUTLIER_AXES) == set(qp.OUTLIER_METRICS)
    values = {m: [1.0] for m in qp.OUTLIER_METRICS}
    frame = pd.DataFrame({"layer": ["L0 q"], "side": ["weight"], "order": [0], **values})
    for m, title in qp.OUTLIER_AXES.items():
        assert len(title) <= 24  # about the 300-pixel chart's height in axis-title characters
        assert qp.outlier_chart(frame, m).to_dict()["encoding"]["y"]["title"] == title
