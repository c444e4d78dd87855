"""The CPU benchmark: a tiny real run writes a results file with every field the notebooks read."""

import json

import torch

from minirt.bench import cpu
from minirt.bench.__main__ import build_parser

TINY = cpu.CpuBenchConfig(
    batch_sizes=(1, 3),
    max_tokens=4,
    warmup_tokens=1,
    prefix_prompts=3,
    prefix_max_tokens=2,
    thread_counts=(1,),
    repeats=1,
)


def test_a_tiny_cpu_run_writes_decode_ratio_and_prefix_rows(tmp_path):
    path = cpu.run(TINY, out_dir=tmp_path, command="test", progress=False)
    assert path.parent == tmp_path / "cpu" and path.name.startswith("engine-")
    record = json.loads(path.read_text())
    assert record["device"] == "cpu" and record["command"] == "test"
    assert record["config"]["batch_sizes"] == [1, 3]
    decode = [r for r in record["results"] if r["name"] == "decode"]
    assert [r["batch_size"] for r in decode] == [1, 3]
    for r in decode:
        assert r["num_generated_tokens"] == r["batch_size"] * TINY.max_tokens
        assert r["tokens_per_s"] > 0
    (ratio,) = [r for r in record["results"] if r["name"] == "decode_batch_ratio"]
    assert ratio["batch_sizes"] == [3, 1] and ratio["ratio"] > 0
    (prefix,) = [r for r in record["results"] if r["name"] == "prefix_cache"]
    assert prefix["shared_prefix_blocks"] >= 4
    assert 0 < prefix["hit_rate"] <= prefix["best_hit_rate"] <= 1
    precision = {r["dtype"]: r for r in record["results"] if r["name"] == "decode_precision"}
    assert sorted(precision) == ["float16", "float32"]
    assert precision["float32"]["greedy_agreement"] == 1.0  # the row the others are held to
    for r in precision.values():
        assert r["batch_size"] == 1 and r["threads"] == 1 and r["tokens_per_s"] > 0
        assert 0.5 < r["nats_per_byte"] < 3  # the embedded model's held-out text, either dtype
    assert cpu.summary(record["results"]).count("\n") == 5


def test_threads_from_the_command_line_reach_the_engine():
    cfg = cpu.config_of(build_parser().parse_args(["cpu", "--threads", "2"]))
    before = torch.get_num_threads()
    try:
        llm = cpu.make_llm(cfg)
        assert llm.config.cpu_threads == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
