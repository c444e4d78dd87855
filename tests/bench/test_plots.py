from pathlib import Path

import pytest

from minirt.bench.__main__ import main
from minirt.bench.plots import plot_gpu
from minirt.results import load_results

H100 = Path(__file__).resolve().parents[2] / "bench" / "results" / "h100"


def test_the_committed_h100_gpu_record_plots_one_line_per_system(tmp_path):
    path = sorted(H100.glob("gpu-*.json"))[-1]
    record = load_results(path)
    fig = plot_gpu(record)
    decode_ax = fig.axes[0]
    systems = {r["system"] for r in record["results"] if r["name"] == "decode" and "error" not in r}
    assert {line.get_label() for line in decode_ax.get_lines()} == systems
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    assert main(["plot", str(copy)]) == 0
    assert copy.with_suffix(".png").stat().st_size > 10_000


def test_plot_refuses_a_record_of_another_topic(tmp_path):
    path = sorted(H100.glob("ncu-*.json"))[-1]
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="plot draws gpu ones"):
        main(["plot", str(copy)])
