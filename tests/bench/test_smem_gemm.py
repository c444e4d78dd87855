"""The SGEMM series on CPU: the sources compile, the parsers read ncu and racecheck, the results."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from minirt.bench import smem_gemm
from minirt.bench.__main__ import main
from minirt.bench.results import load_results
from minirt.tools.bank import simulate

RESULTS = sorted(Path(__file__).resolve().parents[2].glob("bench/results/*/smem-gemm-*.json"))
NEWEST = {p.parent.name: p for p in RESULTS}  # names sort by date: each device's newest run


def entries(ptx):
    """{kernel symbol: its PTX body} of an nvcc -ptx output."""
    parts = re.split(r"\.entry\s+", ptx)[1:]
    return {part.split("(")[0].strip(): part for part in parts}


def test_every_step_is_one_kernel_with_a_comment_saying_what_changed():
    for step in range(1, 8):
        assert f"// step {step}, " in smem_gemm.SOURCE
    for kernel in smem_gemm.KERNELS:
        assert kernel.symbol.split("<")[0] in smem_gemm.SOURCE
    assert len(smem_gemm.BY_NAME) == len(smem_gemm.KERNELS)  # row names are unique


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit) to compile")
def test_every_kernel_and_template_instantiation_compiles_for_sm90(tmp_path):
    # nvcc needs no GPU: a typo shows here, not in the GPU run
    (tmp_path / "gemm.cu").write_text(smem_gemm.nvcc_source())
    subprocess.run(["nvcc", "-arch=sm_90", "-ptx", "-o", str(tmp_path / "gemm.ptx"),
                    str(tmp_path / "gemm.cu")], check=True, capture_output=True)  # fmt: skip
    found = entries((tmp_path / "gemm.ptx").read_text())
    assert len(found) == len(smem_gemm.KERNELS)
    for kernel in smem_gemm.KERNELS:
        if "<" not in kernel.symbol:
            assert kernel.symbol in found  # extern "C": the name CuPy and ncu see
    assert sum(name.startswith("_Z9templated") for name in found) == len(smem_gemm.SHAPES)
    # the race is the missing barrier and nothing else
    assert found["tiled"].count("bar.sync") == 2 and found["tiled_nosync"].count("bar.sync") == 1


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit) to compile")
def test_the_register_blocked_kernel_fits_its_registers_without_spilling(tmp_path):
    (tmp_path / "gemm.cu").write_text(smem_gemm.nvcc_source())
    done = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-Xptxas", "-v", "-o",
                           str(tmp_path / "gemm.cubin"), str(tmp_path / "gemm.cu")],
                          check=True, capture_output=True, text=True)  # fmt: skip
    assert "spill stores" in done.stderr
    assert not re.search(r"[1-9]\d* bytes spill stores", done.stderr)


def test_the_transposed_tile_conflicts_32_ways_and_padding_or_swizzling_removes_it():
    # a warp is tx = 0..31 reading element (tx, k) of the B tile; byte addresses, k = 5
    k = 5
    plain = [4 * (tx * 32 + k) for tx in range(32)]
    padded = [4 * (tx * 33 + k) for tx in range(32)]
    swizzled = [4 * (tx * 32 + (k ^ tx)) for tx in range(32)]
    assert simulate(plain, 4, "ld").wavefronts == 32
    assert simulate(padded, 4, "ld").wavefronts == simulate(swizzled, 4, "ld").wavefronts == 1


def conflicts(words, width=4, op="ld"):
    """Bank conflicts of one warp instruction; `words` are 4-byte offsets, None = inactive."""
    return simulate([None if w is None else 4 * w for w in words], width, op).conflicts


def simple_conflicts(name):
    """(ld, st) conflicts of one 32 x 32 block over one tile of K (steps 2-5): warp ty stores
    As[ty][tx] and its B element, then for each k reads As[ty][k] and the B tile's element."""
    width = 33 if name == "tiled_transposed_pad" else 32
    b_store = {"tiled": lambda ty, tx: ty * 32 + tx, "swizzled": lambda ty, tx: tx * 32 + (ty ^ tx)}
    b_store = b_store.get(name.replace("_nosync", ""), lambda ty, tx: tx * width + ty)
    ld = st = 0
    for ty in range(32):
        st += conflicts([ty * 32 + tx for tx in range(32)], 4, "st")
        st += conflicts([b_store(ty, tx) for tx in range(32)], 4, "st")
        ld += 32 * conflicts([ty * 32] * 32)  # As[ty][k]: one word for the warp, any k
        for k in range(32):
            if name == "tiled_transposed_conflict":  # Bt[tx][k..k+3], one LDS.128 per 4 k
                ld += conflicts([tx * 32 + k for tx in range(32)], 16) if k % 4 == 0 else 0
            elif name == "swizzled":
                ld += conflicts([tx * 32 + (k ^ tx) for tx in range(32)])
            else:  # Bs[k][tx] row-major, or Bt[tx][k] in rows of 33
                ld += conflicts([k * 32 + tx if width == 32 else tx * 33 + k for tx in range(32)])
    return ld, st


def regblock_conflicts(bm, bn, bk, tm, tn):
    """(ld, st) conflicts of one block of steps 6-7: per k (inner loop) and per tile of K."""
    threads, ld, st = (bm // tm) * (bn // tn), 0, 0
    a_step, b_step = threads // (bk // 4), threads // (bn // 4)  # rows stored per pass
    for w in range(0, threads, 32):
        t = range(w, w + 32)
        for v in range(0, tm, 4):  # a[TM] = As[k][tRow..], float4 reads (any k: BM % 32 == 0)
            ld += conflicts([x // (bn // tn) * tm + v for x in t], 16)
        for v in range(0, tn, 4):  # b[TN] = Bs[k][tCol..]
            ld += conflicts([x % (bn // tn) * tn + v for x in t], 16)
        for r0 in range(0, bm, a_step):  # As[(aCol + i) * BM + r] = v.x .. v.w
            for i in range(4):
                rows = [x // (bk // 4) + r0 for x in t]
                st += conflicts([(x % (bk // 4) * 4 + i) * bm + r if r < bm else None
                                 for x, r in zip(t, rows, strict=True)], 4, "st")  # fmt: skip
        for r0 in range(0, bk, b_step):  # Bs[r * BN + bCol] as one float4
            rows = [x // (bn // 4) + r0 for x in t]
            st += conflicts([r * bn + x % (bn // 4) * 4 if r < bk else None
                             for x, r in zip(t, rows, strict=True)], 16, "st")  # fmt: skip
    return ld * bk, st  # per tile of K: BK steps of the inner loop, one pass of stores


def test_address_conflicts_are_what_the_simulator_derives_from_each_instruction():
    n, shapes = smem_gemm.NCU_REF, {"regblock": (128, 128, 8, 8, 8)}
    shapes |= {smem_gemm._templated(*s).name: s for s in smem_gemm.SHAPES}
    for kernel in smem_gemm.KERNELS:
        if kernel.name == "naive":  # no shared memory
            derived = (0, 0)
        elif kernel.name in shapes:
            bm, bn, bk, *_ = shape = shapes[kernel.name]
            derived = tuple(
                c * (n // bm) * (n // bn) * (n // bk) for c in regblock_conflicts(*shape)
            )
        else:
            derived = tuple(c * (n // 32) ** 3 for c in simple_conflicts(kernel.name))
        assert smem_gemm.ADDRESS_CONFLICTS[kernel.name] == derived, kernel.name


def test_residue_is_what_ncu_counts_beyond_the_addresses_scaled_to_its_size():
    rows = [{"kernel": "tiled_transposed_conflict", "ld_conflicts": 234_881_024 // 8 + 5,
             "ld_wavefronts": 1000, "st_conflicts": 32_505_856 // 8, "st_wavefronts": 0},
            {"kernel": "cublas", "ld_conflicts": None}]  # fmt: skip
    (row,) = smem_gemm.residue({"config": {"ncu_size": 512}, "results": rows})
    assert row == {"kernel": "tiled_transposed_conflict", "ld_residue": 5, "ld_pct": 0.5,
                   "st_residue": 0, "st_pct": 0.0}  # fmt: skip


def test_sizes_that_are_not_multiples_of_the_largest_tile_are_refused():
    a, b = np.empty((100, 128), np.float32), np.empty((128, 128), np.float32)
    with pytest.raises(ValueError, match="multiples of 128"):
        smem_gemm.launch(None, smem_gemm.BY_NAME["naive"], a, b, None)


HEADER = (
    '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size",'
    '"Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"\n'
)


def csv_row(launch, kernel, metric, value):
    return (f'"{launch}","1","python3","127.0.0.1","{kernel}","1","7","(256, 1, 1)","(8, 8, 1)",'
            f'"0","9.0","Command line profiler metrics","{metric}","","{value}"\n')  # fmt: skip


def test_ncu_csv_rows_are_kept_in_launch_order_with_template_names_read():
    ld, st = smem_gemm.METRICS[0], smem_gemm.METRICS[2]
    text = ("==PROF== Connected to process 1\n" + HEADER
            + csv_row(1, "void templated<64, 64, 8, 4, 4>(const float *, int)", ld, "1,024")
            + csv_row(0, "tiled_transposed_conflict", ld, "31744")
            + csv_row(0, "tiled_transposed_conflict", st, "31744"))  # fmt: skip
    profiled = smem_gemm.parse_csv(text)
    assert [name for name, _ in profiled] == ["tiled_transposed_conflict",
                                              "templated<64, 64, 8, 4, 4>"]  # fmt: skip
    assert profiled[0][1] == {ld: 31744.0, st: 31744.0} and profiled[1][1] == {ld: 1024.0}
    with pytest.raises(ValueError, match="no CSV rows"):
        smem_gemm.parse_csv("==PROF== No kernels were profiled.\n")


RACECHECK = """========= COMPUTE-SANITIZER
========= Error: Race reported between Read access at tiled_nosync+0x2a0
=========     and Write access at tiled_nosync+0x150 [2048 hazards]
=========
========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)
"""


def test_the_racecheck_summary_line_gives_the_hazard_count():
    assert smem_gemm.parse_racecheck(RACECHECK) == (
        1, "RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)")  # fmt: skip
    clean = "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n"
    assert smem_gemm.parse_racecheck(clean)[0] == 0
    with pytest.raises(ValueError, match="RACECHECK SUMMARY"):
        smem_gemm.parse_racecheck("python: not found\n")


def test_rows_carry_conflicts_and_hazards_and_none_where_unmeasured():
    timed = [{"kernel": "tiled", "ms": 1.0, "gflops": 2.0, "fraction_of_cublas": 0.1,
              "max_rel_err": 1e-6}, {"kernel": "cublas", "ms": 0.1, "gflops": 20.0,
              "fraction_of_cublas": 1.0, "max_rel_err": 0.0}]  # fmt: skip
    conflicts = {"tiled": {"ld_conflicts": 0, "st_conflicts": 0, "ld_wavefronts": 10,
                           "st_wavefronts": 4}}  # fmt: skip
    tiled, cublas = smem_gemm.rows(timed, conflicts, {"tiled": 0})
    assert tiled["ld_wavefronts"] == 10 and tiled["racecheck_hazards"] == 0
    assert cublas["ld_conflicts"] is None and cublas["racecheck_hazards"] is None
    assert "tiled" in smem_gemm.summary([tiled, cublas])


def test_the_smem_gemm_topic_exits_2_with_a_clear_message_without_cuda(
    monkeypatch, capsys, tmp_path
):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["smem-gemm", "--out", str(tmp_path)]) == 2
    assert "CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(not RESULTS, reason="no bench/results/*/smem-gemm-*.json committed yet")
@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.parent.name + "/" + p.name)
def test_committed_results_show_the_lessons_of_the_series(path):
    record = load_results(path)
    rows = {r["kernel"]: r for r in record["results"]}
    bound = record["config"]["rel_err_bound"]
    for name, r in rows.items():
        # tiled_nosync is a race: right or wrong by luck, so its error is reported, not required
        if name != "tiled_nosync":
            assert r["max_rel_err"] is not None and r["max_rel_err"] < bound, name
    hand_written = [r["fraction_of_cublas"] for name, r in rows.items() if name != "cublas"]
    assert max(hand_written) >= 0.5
    # The swizzled tile reads exactly its ideal wavefronts; the transposed tile without padding
    # is a 32-way conflict on every load, against a padded one that is conflict-free by its
    # addresses.
    assert rows["swizzled"]["ld_conflicts"] == 0
    pad, bad = rows["tiled_transposed_pad"], rows["tiled_transposed_conflict"]
    assert bad["ld_conflicts"] > 1000 * max(1, pad["ld_conflicts"])
    # Residue: what ncu counts beyond smem_gemm.ADDRESS_CONFLICTS (notebook 09, section 5).
    # Never negative: fewer than the addresses force would mean our model of an instruction is
    # wrong. On loads it stays under 0.1 % of the wavefronts: 0.057-0.068 % in tiled, nosync
    # and padded, on the H100 and the H200 alike (~30k at 1024^3); 0.005-0.007 % in 64x64;
    # none in swizzled and the 128-wide tiles. On stores it is far larger: 12-20 % of the
    # store wavefronts of tiled, padded and swizzled. Its count differs between the two GPUs by
    # a few per cent where every address-decided count is identical (the test below), so it
    # depends on timing, not on addresses. HYPOTHESIS, not established: shared accesses that
    # lose a cycle of the SM's L1/shared-memory data banks to other traffic, global loads
    # returning into L1 most likely; it fits that only kernels with 32-64 resident warps
    # (many loads in flight) show a load residue. Test: ncu at other sizes, or a variant
    # without global loads.
    for r in smem_gemm.residue(record):
        assert r["ld_residue"] >= 0 and r["st_residue"] >= 0, r
        assert r["ld_pct"] < 0.1, r
    assert rows["tiled_nosync"]["racecheck_hazards"] > 0
    assert rows["tiled"]["racecheck_hazards"] == 0


@pytest.mark.skipif(len(NEWEST) < 2, reason="needs smem-gemm-*.json from two devices")
def test_counts_the_addresses_decide_are_identical_on_every_gpu():
    # Same kernels, same addresses: ncu's ideal wavefronts (wavefronts - conflicts) of every
    # kernel, and the load conflicts of those without a residue, agree to the last digit on
    # every GPU; only the residue (timing) may differ.
    exact = ["tiled_transposed_conflict", "swizzled", "regblock", "templated_128x64x16_8x4"]
    seen = {}
    for device, path in NEWEST.items():
        rows = [r for r in load_results(path)["results"] if r["ld_conflicts"] is not None]
        seen[device] = {r["kernel"]: (r["ld_wavefronts"] - r["ld_conflicts"],
                                      r["st_wavefronts"] - r["st_conflicts"],
                                      r["ld_conflicts"] if r["kernel"] in exact else None)
                        for r in rows}  # fmt: skip
    first, *others = seen.values()
    assert len(first) == len(smem_gemm.KERNELS)
    assert all(other == first for other in others), seen
