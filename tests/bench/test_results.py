"""The benchmark results writer: one self-describing JSON file per run."""

import json

import pytest

from minirt.results import SCHEMA, load_results, machine_info, versions, write_results


def test_results_land_in_a_device_folder_named_by_topic_and_date(tmp_path):
    path = write_results("transfers", "h100", [{"name": "h2d", "gb_per_s": 25.0}], out_dir=tmp_path)
    assert path.parent == tmp_path / "h100"
    assert path.name.startswith("transfers-") and path.suffix == ".json"


def test_a_results_file_records_machine_versions_date_and_command(tmp_path):
    path = write_results("engine", "cpu", [{"name": "x"}], out_dir=tmp_path, command="bench cpu")
    record = json.loads(path.read_text())
    assert record["schema"] == SCHEMA
    assert record["device"] == "cpu" and record["topic"] == "engine"
    assert set(record["machine"]) >= {"cpu", "cores", "platform"}
    assert set(record["versions"]) == {"python", "torch", "minirt", "transformers"}
    assert record["date"].endswith("+00:00")
    assert record["command"] == "bench cpu"
    assert record["results"] == [{"name": "x"}]


def test_two_runs_in_the_same_second_keep_both_files(tmp_path):
    first = write_results("engine", "cpu", [], out_dir=tmp_path, machine={})
    second = write_results("engine", "cpu", [], out_dir=tmp_path, machine={})
    assert first != second and first.exists() and second.exists()


def test_machine_info_and_versions_are_json_serialisable():
    json.dumps({"machine": machine_info(), "versions": versions()})
    assert versions()["minirt"] is not None


def test_load_results_refuses_a_file_of_another_schema(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema": 0, "results": []}))
    with pytest.raises(ValueError, match="schema 1.*python -m minirt.bench"):
        load_results(path)


def test_load_results_reads_back_what_was_written(tmp_path):
    path = write_results("engine", "cpu", [{"name": "decode"}], out_dir=tmp_path, config={"a": 1})
    assert load_results(path)["config"] == {"a": 1}
