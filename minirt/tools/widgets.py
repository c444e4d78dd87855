"""Knobs that redraw a figure, with a static default so a notebook read without a kernel shows it.

`explore(draw, step=IntSlider(...))` draws `draw(**defaults)` at once as an ordinary figure
output, then returns controls whose changes redraw below them. The controls' text form is fixed
(`Explorer.__repr__`), so a stored notebook compares the same on every run under nbval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.figure import Figure


class Explorer(widgets.VBox):
    """Controls over an output area; its plain-text form names the knobs, never their state."""

    def __repr__(self) -> str:
        names = ", ".join(c.description for c in self.children[:-1])
        return f"[interactive: move {names} to redraw — needs a running kernel]"


def _show(fig: Figure) -> None:
    display(fig)
    plt.close(fig)  # else the inline backend shows it a second time at the end of the cell


def explore(draw: Callable[..., Figure], **controls: widgets.ValueWidget) -> Explorer:
    """Show `draw(**current values)` now, and return controls that redraw it when they change."""
    for name, control in controls.items():
        if not control.description:
            control.description = name
        if hasattr(control, "continuous_update"):
            control.continuous_update = False  # redraw on release: a figure takes ~0.1 s
    _show(draw(**{k: c.value for k, c in controls.items()}))
    out = widgets.Output()

    def redraw(_: Any = None) -> None:
        with out:
            out.clear_output(wait=True)
            _show(draw(**{k: c.value for k, c in controls.items()}))

    for control in controls.values():
        control.observe(redraw, names="value")
    return Explorer([*controls.values(), out])
