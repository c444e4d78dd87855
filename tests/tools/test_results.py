"""Finding the newest committed benchmark result for a topic, or saying there is none."""

import json

import pytest

from minirt.results import write_results
from minirt.tools.results import latest_results, results_section


def _write(folder, topic, date, rows, device="h100"):
    path = write_results(topic, device, rows, folder, command="python -m minirt.bench x")
    record = json.loads(path.read_text())
    record["date"] = date
    path.write_text(json.dumps(record))
    return path


def test_no_results_folder_means_none(tmp_path):
    assert latest_results("decode", root=tmp_path) is None
    text = results_section(["decode"], root=tmp_path)
    assert text.startswith("No H100 numbers are committed yet")
    assert "bench/results/h100/decode-*.json" in text


def test_the_newest_run_of_the_topic_wins_by_its_recorded_date(tmp_path):
    _write(tmp_path, "decode", "2025-01-02T00:00:00+00:00", [{"name": "x", "v": 2}])
    _write(tmp_path, "decode", "2025-01-01T00:00:00+00:00", [{"name": "x", "v": 1}])
    _write(tmp_path, "decode_long", "2026-01-01T00:00:00+00:00", [{"name": "x", "v": 3}])
    _write(tmp_path, "decode", "2027-01-01T00:00:00+00:00", [{"name": "x", "v": 4}], "cpu")
    record = latest_results("decode", root=tmp_path)
    assert record["results"] == [{"name": "x", "v": 2}]
    assert latest_results(["other", "decode_long"], root=tmp_path)["results"][0]["v"] == 3


def test_the_section_prints_one_table_per_kind_of_row(tmp_path):
    rows = [{"name": "copy", "gb_per_s": 3000.5}, {"name": "decode", "batch": 8, "ms": 1.25}]
    _write(tmp_path, "roofline", "2025-01-01T00:00:00+00:00", rows)
    text = results_section("roofline", root=tmp_path)
    assert "command: python -m minirt.bench x" in text
    assert "[copy]" in text and "[decode]" in text
    assert "3000" in text and "1.25" in text


def test_a_file_of_another_schema_is_refused(tmp_path):
    (tmp_path / "h100").mkdir()
    (tmp_path / "h100" / "decode-20250101-000000.json").write_text('{"schema": 99}')
    with pytest.raises(ValueError, match="schema 99, not schema 1; re-run the benchmark"):
        latest_results("decode", root=tmp_path)


def test_the_section_can_print_only_the_rows_a_chapter_is_about(tmp_path):
    rows = [
        {"name": "decode", "system": "graphs", "batch": 1, "step_ms": 1.5, "configs": [1, 2]},
        {"name": "decode", "system": "eager", "batch": 1, "step_ms": 22.8},
        {"name": "decode", "system": "graphs", "batch": 64, "step_ms": 2.7},
        {"name": "hbm_copy", "gb_per_s": 2829.0},
    ]
    _write(tmp_path, "gpu", "2025-01-01T00:00:00+00:00", rows)
    text = results_section(
        "gpu",
        root=tmp_path,
        name="decode",
        where={"system": ["graphs"]},
        columns=["batch", "step_ms"],
    )
    assert "file: gpu-" in text
    table = text.split("\n")[-3:]
    assert table[0].split() == ["batch", "step_ms"]
    assert [line.split() for line in table[1:]] == [["1", "1.5"], ["64", "2.7"]]
    assert "22.8" not in text and "2829" not in text and "configs" not in text
