"""Plain-text tables for notebook output: aligned columns, floats to 4 significant digits.

A measured number whose last digits depend on the CPU (see `Noisy`) prints as "0.2 ± 0.3";
notebooks/nbval_sanitize.cfg masks such pairs, so nbval compares the text around them strictly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Noisy:
    """A measurement and how far it moves between runs that differ only in rounding: another
    CPU's vector kernels, or the input nudged by a part in a million (`minirt.quant.accuracy`).

    Shown as value ± half_width, both rounded to half_width's first significant digit: the
    digits past it are not the measurement's but the CPU's. A half-width of 0 (measured once, or
    the same on every CPU) shows the value alone, as a float. A claim that compares two Noisy
    numbers must hold by more than their half-widths (`clearly_below`).
    """

    value: float
    half_width: float = 0.0

    def __str__(self) -> str:
        if not self.half_width > 0:
            return _cell(float(self.value))
        decimals = max(0, -math.floor(math.log10(self.half_width)))
        return f"{self.value:.{decimals}f} ± {self.half_width:.{decimals}f}"

    def clearly_below(self, other: Noisy) -> bool:
        """True when even this one's highest value lies below the other's lowest."""
        return self.value + self.half_width < other.value - other.half_width


def _cell(value: Any) -> str:
    if isinstance(value, Noisy):
        return str(value)
    if isinstance(value, float):
        # 4 significant digits, but never an exponent for big numbers (tokens/s, bytes)
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))[:40]
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as an aligned text table; columns default to every key, in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)
