"""Predict, then check: a chapter asks for a guess before a measurement and shows both.

The reader writes a number (or a word) into a variable; `reveal(guess, truth, what)` prints the
measured truth beside it and how far off it was. With no guess yet it says where to write one,
so a chapter's stored output is the same for every reader. Chapters 01-03 use it.
"""

from __future__ import annotations

Value = float | int | str | None


def _show(value: Value, unit: str) -> str:
    if value is None:
        return "never"
    if isinstance(value, int | float):
        text = f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"  # as format_table does
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def reveal(guess: Value, truth: Value, what: str, unit: str = "", close: float = 0.25) -> str:
    """The measured `truth` beside the reader's `guess`: the ratio for numbers ("close" within
    `close`, a fraction), right or wrong for words and for "never" (`None` as the truth)."""
    lines = [f"{what}: measured {_show(truth, unit)}"]
    if guess is None or guess == "":
        lines.append("your guess: none yet; write it into the cell above, then run both again")
        return "\n".join(lines)
    numbers = isinstance(guess, int | float) and isinstance(truth, int | float) and truth != 0
    if not numbers:
        same = str(guess).strip().lower() == str(_show(truth, "")).strip().lower()
        lines.append(f"your guess: {_show(guess, unit)}: {'right' if same else 'not this time'}")
        return "\n".join(lines)
    ratio = float(guess) / float(truth)
    verdict = "close" if abs(ratio - 1) <= close else ("too high" if ratio > 1 else "too low")
    lines.append(f"your guess: {_show(guess, unit)}, {ratio:.2g}x the measurement: {verdict}")
    return "\n".join(lines)
