"""Predict-then-check: the truth beside the reader's guess, the same output before any guess."""

from minirt.tools.predict import reveal


def test_without_a_guess_the_cell_shows_the_truth_and_where_to_write_one():
    text = reveal(None, 16440, "tokens through the model", "tokens")
    assert text.splitlines() == [
        "tokens through the model: measured 16,440 tokens",
        "your guess: none yet; write it into the cell above, then run both again",
    ]


def test_a_numeric_guess_is_judged_by_its_ratio_to_the_truth():
    assert "1x the measurement: close" in reveal(110, 100, "x")
    assert "2x the measurement: too high" in reveal(200, 100, "x")
    assert "0.5x the measurement: too low" in reveal(50, 100, "x")


def test_words_and_never_are_right_or_wrong():
    assert reveal("never", None, "crossover").endswith("right")
    assert reveal(300, None, "crossover").endswith("not this time")
    assert reveal("memory", "memory", "bound").endswith("right")
