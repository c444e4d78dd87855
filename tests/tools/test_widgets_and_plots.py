"""Widget views draw a default figure at once and show a fixed text form; plots draw from data."""

import matplotlib

matplotlib.use("Agg")  # no display in tests

from ipywidgets import IntSlider  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from minirt.config import PRESETS  # noqa: E402
from minirt.tools import plots  # noqa: E402
from minirt.tools.widgets import Explorer, explore  # noqa: E402


def test_explore_draws_the_default_then_redraws_on_change():
    calls = []

    def draw(step):
        calls.append(step)
        return plots.plot_schedules([3, 1, 2], max(1, step))

    view = explore(draw, step=IntSlider(value=2, min=1, max=4))
    assert isinstance(view, Explorer) and calls == [2]
    assert repr(view) == "[interactive: move step to redraw — needs a running kernel]"
    view.children[0].value = 3
    assert calls == [2, 3]


def test_plots_return_figures():
    assert isinstance(plots.plot_roofline(PRESETS["qwen3-0.6b"], 512, [1, 8, 64]), Figure)
    assert isinstance(plots.plot_block_size_waste([5, 17, 40], [1, 4, 16], 4), Figure)
    caps = plots.plot_kv_capacity({"q": PRESETS["qwen3-0.6b"]}, [512, 4096], 80e9)
    assert isinstance(caps, Figure)
