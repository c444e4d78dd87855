"""Timeline and bandwidth figures draw exactly what they are given: a bar per interval, a row
per lane, a point per measured copy."""

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from minirt import transfer as tr  # noqa: E402
from minirt.tools.streams import Hardware, simulate  # noqa: E402
from minirt.tools.timeline_plot import (  # noqa: E402
    KIND_COLORS,
    bandwidth_points,
    plot_bandwidth,
    plot_timeline,
    plot_timelines,
)

HW = Hardware()
MiB = 1 << 20


def test_a_timeline_has_one_bar_per_interval_and_its_lanes_labelled():
    t = simulate(tr.stream_order_program("two streams + event"), HW)
    fig = plot_timeline(t)
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and len(ax.patches) == len(t.intervals)
    assert [label.get_text().strip() for label in ax.get_yticklabels()] == t.lanes()
    assert t.lanes() == ["copy", "compute", "cpu"]  # streams first, the CPU last
    # Each bar sits where its interval does, in its kind's colour.
    for bar, iv in zip(sorted(ax.patches, key=lambda p: p.get_x()), t.intervals, strict=True):
        assert bar.get_x() == pytest.approx(iv.start_ms)
        assert bar.get_width() == pytest.approx(iv.ms)
    colors = {matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches}
    kinds = {iv.kind for iv in t.intervals}
    assert colors == {matplotlib.colors.to_hex(KIND_COLORS[k]) for k in kinds}
    plt.close(fig)


def test_timelines_share_one_time_axis_and_draw_on_given_axes():
    one = simulate(tr.overlap_program(256 * MiB, 20, two_streams=False), HW)
    two = simulate(tr.overlap_program(256 * MiB, 20, two_streams=True), HW)
    fig = plot_timelines({"one stream": one, "two streams": two})
    top, bottom = fig.axes[:2]
    assert [top.get_title(loc="left"), bottom.get_title(loc="left")] == [
        "one stream",
        "two streams",
    ]
    assert top.get_xlim() == bottom.get_xlim() and top.get_xlim()[1] >= one.total_ms
    assert len(bottom.patches) == len(two.intervals)
    plt.close(fig)
    fig, ax = plt.subplots()
    assert plot_timeline(two, ax=ax) is fig and len(ax.patches) == len(two.intervals)
    plt.close(fig)


def test_bandwidth_plot_has_a_point_per_measured_copy():
    def row(direction, memory, nbytes, gbps):
        return {"experiment": "bandwidth", "direction": direction, "memory": memory,
                "nbytes": nbytes, "gbps": gbps}  # fmt: skip

    record = {"results": [row(d, m, n, 1.0 + n / MiB) for d in ("h2d", "d2h")
                          for m in ("pinned", "pageable") for n in (MiB, 64 * MiB)]}  # fmt: skip
    assert bandwidth_points(record, "h2d", "pinned") == [(MiB, 2.0), (64 * MiB, 65.0)]
    fig = plot_bandwidth({"run": record}, HW)
    for ax in fig.axes:  # 2 memories x (measured points + simulated line)
        assert len(ax.lines) == 4
        assert all(len(line.get_xdata()) == 2 for line in ax.lines)
    plt.close(fig)
