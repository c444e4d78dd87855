"""The CPU benchmark: a tiny real run writes a results file with every field the notebooks read."""

import json

from minirt.bench import cpu
from minirt.bench.__main__ import build_parser

TINY = cpu.CpuBenchConfig(
    batch_sizes=(1, 3),
    max_tokens=4,
    warmup_tokens=1,
    prefix_prompts=3,
    prefix_max_tokens=2,
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
    assert cpu.summary(record["results"]).count("\n") == 3


def test_the_command_line_takes_batch_sizes_and_an_output_folder():
    args = build_parser().parse_args(["cpu", "--batch-sizes", "1,8", "--out", "x"])
    assert args.batch_sizes == (1, 8) and args.out == "x"
