"""format_table: aligned columns, 4 significant digits, noisy numbers as value ± spread."""

import re
from pathlib import Path

from minirt.tools.text import Noisy, format_table

SANITIZE = Path(__file__).resolve().parents[2] / "notebooks" / "nbval_sanitize.cfg"


def test_a_noisy_number_shows_the_digits_its_spread_leaves():
    assert str(Noisy(0.176, 0.25)) == "0.2 ± 0.2"
    assert str(Noisy(0.176, 0.031)) == "0.18 ± 0.03"
    assert str(Noisy(38.24, 2.1)) == "38 ± 2"
    assert str(Noisy(4.3767, 0.0)) == "4.377"  # scored once, or the same on every CPU


def test_clearly_below_needs_the_whole_ranges_apart():
    assert Noisy(0.2, 0.2).clearly_below(Noisy(6.0, 1.0))
    assert not Noisy(0.2, 0.2).clearly_below(Noisy(0.5, 0.2))  # overlapping: a tie
    assert not Noisy(6.0, 1.0).clearly_below(Noisy(0.2, 0.2))


def test_format_table_prints_noisy_cells_and_nbval_masks_them():
    rows = [{"method": "int8", "extra %": Noisy(0.176, 0.031)}]
    rows.append({"method": "w4a16-g128", "extra %": Noisy(4.3767)})
    text = format_table(rows)
    assert text.splitlines()[1:] == ["int8        0.18 ± 0.03", "w4a16-g128  4.377"]
    # notebooks/nbval_sanitize.cfg has a rule for "value ± spread": the digits are the CPU's.
    rules = re.findall(r"regex: (.*)\nreplace: (.*)", SANITIZE.read_text())

    def masked(text):
        for pattern, replacement in rules:
            text = re.sub(pattern, replacement, text)
        return text

    assert "0.18 ± 0.03" not in masked(text) and "4.377" in masked(text)
    # Digits of another length pad the columns differently; masked, the tables compare equal.
    rows[0]["extra %"] = Noisy(0.3, 0.1)
    rows.insert(0, {"method": "fp8", "extra %": Noisy(0.25, 0.04), "next": 1})
    other = format_table(rows)
    rows[0]["extra %"] = Noisy(2.5, 0.4)  # shorter than "0.25 ± 0.04"
    assert masked(format_table(rows)) == masked(other) != format_table(rows)
