"""`python -m minirt.bench moe`: the CPU part end to end on tiny sizes (2 gloo processes), the
command line, and (on a GPU) the grouped-GEMM rows checked against the fp32 reference."""

import pytest

from minirt.bench import moe
from minirt.bench.__main__ import build_parser
from minirt.moe.demo import Recipe
from minirt.results import load_results


def test_cpu_part_writes_all_to_all_and_ep_block_rows(tmp_path):
    recipe = Recipe(hidden=32, intermediate=16, num_experts=4, top_k=2, num_tokens=8)
    rows = moe.all_to_all_rows((2,), (1024, 8192), reps=2)
    rows += moe.ep_block_rows((2,), reps=1, recipe=recipe)
    assert [(r["world_size"], r["bytes_per_rank"]) for r in rows[:2]] == [(2, 1024), (2, 8192)]
    for r in rows[:2]:  # GB/s is what left the rank (half of it, with 2 ranks) over the time
        assert r["gb_s"] == pytest.approx(r["bytes_per_rank"] / 2 / (r["ms"] / 1e3) / 1e9)
    blocks = rows[2:]
    assert {(r["micro_batches"], r["fp8_dispatch"]) for r in blocks} == {
        (1, False), (1, True), (2, False), (2, True)}  # fmt: skip
    for r in blocks:
        assert sum(r["recv_rows"]) == 8 * 2 and len(r["phases"]) == 2
        assert r["total_ms"] >= max(p["end_ms"] for ph in r["phases"] for p in ph) - 1e-9
    text = moe.summary(rows)
    assert "gloo" in text and "ep_block ranks=2" in text


def test_run_cpu_writes_one_json_under_cpu(tmp_path):
    path = moe.run_cpu(tmp_path, "python -m minirt.bench moe --cpu", worlds=(2,),
                       sizes=(1024,), reps=1, ep_reps=1)  # fmt: skip
    record = load_results(path)
    assert path.parent.name == "cpu" and record["topic"] == "moe"
    assert {r["experiment"] for r in record["results"]} == {"all_to_all", "ep_block"}


def test_the_moe_subcommand_parses():
    args = build_parser().parse_args(["moe", "--cpu", "--worlds", "2,4"])
    assert args.topic == "moe" and args.cpu and args.worlds == (2, 4)


@pytest.mark.gpu
def test_grouped_gemm_rows_agree_with_the_reference_on_cuda():
    rows = moe.grouped_gemm_rows(tokens=(16, 256), reps=2, tiles=moe.TILES)
    timed = [r for r in rows if "ms" in r]
    assert {r["method"] for r in timed} >= {"triton_64x64x32_w4s3", "loop", "ref"}
    assert len({r["method"] for r in timed if r["method"].startswith("triton")}) == len(moe.TILES)
    for r in timed:
        assert r["rel_err"] < 1e-2, r
    assert moe.block_rows(tokens=(16,), reps=2)
