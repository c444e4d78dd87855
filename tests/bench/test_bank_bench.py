"""The bank-conflict harness on CPU: the generated CUDA source, the ncu CSV parser, the CLI."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from minirt.bench import bank
from minirt.bench.__main__ import main
from minirt.results import load_results
from minirt.tools.bank import PATTERNS

RESULTS = sorted(Path(__file__).resolve().parents[2].glob("bench/results/*/bank-*.json"))
NEWEST = {p.parent.name: p for p in RESULTS}  # names sort by date: each device's newest run

_ACCESS = re.compile(r"(ld\.shared\.\S+|st\.shared\.\S+|ldmatrix\.\S+)")


def kernels(source):
    """{kernel name: its source} from the generated module."""
    found = re.findall(r'extern "C" __global__ void (\w+)\(.*?\n}\n', source, re.S)
    bodies = re.split(r'(?=extern "C" __global__)', source)[1:]
    return dict(zip(found, bodies, strict=True))


def test_the_source_has_one_kernel_per_pattern_named_after_it():
    source = bank.kernel_source()
    assert list(kernels(source)) == list(PATTERNS)
    assert source.count("__global__") == len(PATTERNS)


def test_each_kernel_issues_exactly_one_shared_access_of_the_patterns_width():
    expected = {("ld", 4): "ld.shared.b32", ("ld", 8): "ld.shared.v2.b32",
                ("ld", 16): "ld.shared.v4.b32", ("st", 4): "st.shared.b32",
                ("st", 8): "st.shared.v2.b32", ("st", 16): "st.shared.v4.b32",
                ("ldmatrix", 16): "ldmatrix.sync.aligned.m8n8.x4.shared.b16"}  # fmt: skip
    for name, body in kernels(bank.kernel_source()).items():
        _, width, op = PATTERNS[name]
        assert _ACCESS.findall(body) == [expected[op, width]], name
        assert "asm volatile" in body  # the compiler may neither merge nor drop it


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit) to compile")
def test_the_source_compiles_to_ptx_with_one_shared_access_per_kernel(tmp_path):
    # nvcc needs no GPU: this catches a PTX typo before the GPU run does
    (tmp_path / "bank.cu").write_text(bank.kernel_source())
    subprocess.run(["nvcc", "-arch=sm_90", "-ptx", "-o", str(tmp_path / "bank.ptx"),
                    str(tmp_path / "bank.cu")], check=True, capture_output=True)  # fmt: skip
    ptx = (tmp_path / "bank.ptx").read_text()
    assert ptx.count(".entry") == len(PATTERNS)
    assert len(re.findall(r"^\s*(ld\.shared|st\.shared|ldmatrix)", ptx, re.M)) == len(PATTERNS)


def test_inactive_threads_skip_the_access_and_addresses_are_the_patterns():
    source = bank.kernel_source({"half": ([0, *[None] * 31], 4, "ld")})
    assert f"{bank.INACTIVE}u" in source and f"if (offset != {bank.INACTIVE}u)" in source
    assert "{0u, " in source


def test_ldmatrix_x1_and_x2_follow_the_active_threads():
    x1 = [*range(0, 128, 16), *[None] * 24]
    assert "m8n8.x1" in bank.kernel_source({"one": (x1, 16, "ldmatrix")})
    with pytest.raises(ValueError, match="threads 0-7, 0-15 or 0-31"):
        bank.kernel_source({"odd": ([None, *range(16, 512, 16)], 16, "ldmatrix")})


def test_a_pattern_name_that_cannot_name_a_kernel_is_refused():
    with pytest.raises(ValueError, match="C identifier"):
        bank.kernel_source({"stride-2": PATTERNS["ld32_stride2"]})


NCU_CSV = """==PROF== Connected to process 1
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","1","python3","127.0.0.1","ld32_stride2","1","7","(32, 1, 1)","(1, 1, 1)","0","9.0","Command line profiler metrics","l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum","","1"
"0","1","python3","127.0.0.1","ld32_stride2","1","7","(32, 1, 1)","(1, 1, 1)","0","9.0","Command line profiler metrics","l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum","","2"
"1","1","python3","127.0.0.1","st32_stride32","1","7","(32, 1, 1)","(1, 1, 1)","0","9.0","Command line profiler metrics","l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum","","32"
"""  # noqa: E501


def test_ncu_csv_rows_become_metrics_per_kernel_and_rows_compare_them_to_the_simulator():
    measured = bank.parse_csv(NCU_CSV)
    assert measured["ld32_stride2"] == {
        "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum": 1.0,
        "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum": 2.0,
    }
    by_name = {r["pattern"]: r for r in bank.rows(measured, ("ld", "st"))}
    assert len(by_name) == len(PATTERNS)
    r = by_name["ld32_stride2"]
    assert (r["wavefronts"], r["conflicts"]) == (r["sim_wavefronts"], r["sim_conflicts"]) == (2, 1)
    assert r["match"] and isinstance(r["wavefronts"], int)
    assert by_name["st32_stride32"]["conflicts"] is None and not by_name["st32_stride32"]["match"]
    assert by_name["ldmatrix_x4_rows128"]["metric_op"] == "ld"  # no ldsm counters asked for
    assert "differs" in bank.summary(list(by_name.values()))


def test_ncu_output_without_csv_rows_is_an_error():
    with pytest.raises(ValueError, match="no CSV rows"):
        bank.parse_csv("==PROF== No kernels were profiled.\n")


def test_the_bank_topic_exits_2_with_a_clear_message_without_ncu(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert main(["bank", "--out", str(tmp_path)]) == 2
    assert "ncu" in capsys.readouterr().err


@pytest.mark.skipif(len(NEWEST) < 2, reason="needs bank-*.json from two devices")
def test_every_gpu_counts_the_same_wavefronts_and_conflicts_for_every_pattern():
    # One instruction of one warp, nothing else in flight: the counts are the addresses' alone,
    # so two GPUs of the same SM (H100, H200: compute capability 9.0) must agree exactly.
    counts = {}
    for device, path in NEWEST.items():
        rows = load_results(path)["results"]
        counts[device] = {r["pattern"]: (r["wavefronts"], r["conflicts"]) for r in rows}
    first, *others = counts.values()
    assert len(first) == len(PATTERNS)
    for other in others:
        assert other == first, {k: (first.get(k), v) for k, v in other.items() if first.get(k) != v}
