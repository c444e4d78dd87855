"""The SGEMM series on CPU: the sources compile, the parsers read ncu and racecheck, the results."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from minirt.bench import smem_gemm
from minirt.bench.__main__ import main
from minirt.results import load_results
from minirt.tools import bank
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
    for step in ("2h", "4h", "5h", "6h", "7h"):  # the fp16 steps, named after the fp32 ones
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
    assert sum(name.startswith("_Z11templated_h") for name in found) == len(smem_gemm.HALF_SHAPES)
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


def cuobjdump():
    """cuobjdump from the CUDA toolkit, or the copy Triton ships; None when neither is here."""
    found = shutil.which("cuobjdump")
    if found is None:
        try:
            import triton

            bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
            found = str(bundled) if bundled.exists() else None
        except ImportError:
            pass
    return found


def shared_instructions(sass):
    """{kernel symbol: [LDS/LDSM/STS opcodes in program order]} of a cuobjdump -sass listing."""
    parts = re.split(r"\n\s+Function : ", sass)[1:]
    return {p.split("\n")[0].strip(): re.findall(r"\b((?:LDSM|LDS|STS)(?:\.[A-Z0-9]+)*) ", p)
            for p in parts}  # fmt: skip


@pytest.mark.skipif(shutil.which("nvcc") is None or cuobjdump() is None,
                    reason="needs nvcc and cuobjdump (CUDA toolkit, or Triton's copy)")  # fmt: skip
def test_the_half_kernels_compile_to_the_shared_instructions_the_conflict_counts_assume(tmp_path):
    # ADDRESS_CONFLICTS of the fp16 steps counts these instructions (simple_half_conflicts and
    # regblock_conflicts below); a new ptxas that merges loads differently would change them.
    (tmp_path / "gemm.cu").write_text(smem_gemm.nvcc_source())
    subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-o", str(tmp_path / "gemm.cubin"),
                    str(tmp_path / "gemm.cu")], check=True, capture_output=True)  # fmt: skip
    sass = subprocess.run([cuobjdump(), "-sass", str(tmp_path / "gemm.cubin")], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    found = {name: sorted(set(ops)) for name, ops in shared_instructions(sass).items()}
    assert found["tiled_h"] == ["LDS.64", "LDS.U16", "STS.U16"]
    assert found["tiled_transposed_conflict_h"] == ["LDS.64", "STS.U16"]  # Bt: 4 k per load
    assert found["tiled_transposed_pad1_h"] == ["LDS.64", "LDS.U16", "STS.U16"]
    assert found["tiled_transposed_pad_h"] == ["LDS", "LDS.64", "STS.U16"]  # Bt: 2 k per load
    assert {"LDS.U16", "STS.U16"} <= set(found["swizzled_h"])  # any width: no conflict
    assert found["regblock_h"] == ["LDS.128", "STS.64", "STS.U16"]
    # wmma_h: ldmatrix (A as is, B transposed), 16-byte tile stores, 8-byte fragment stores
    assert found["wmma_h"] == ["LDS", "LDSM.16.M88.4", "LDSM.16.MT88.4", "STS.128", "STS.64"]


def half_words(elements):
    """Byte addresses of the 4-byte words that hold these half elements (the simulator models
    a 2-byte access as one of the word around it: two threads in one word share it)."""
    return [e * 2 // 4 * 4 for e in elements]


def test_half_tiles_conflict_by_words_so_padding_must_be_a_whole_word():
    # a warp is tx = 0..31 reading element (tx, k) of a transposed 32-wide half tile
    def ways(width, k):
        return simulate(half_words([tx * width + k for tx in range(32)]), 4, "ld").wavefronts

    assert {ways(32, k) for k in range(32)} == {16}  # rows of 16 words: 16-way, fp32's 32-way
    assert [ways(33, k) for k in range(4)] == [1, 2, 1, 2]  # one half of padding: 2-way, odd k
    assert {ways(34, k) for k in range(32)} == {1}  # one word of padding: 17 words a row
    swizzled = [simulate(half_words([tx * 32 + (k ^ (tx & 30)) for tx in range(32)]), 4, "ld")
                for k in range(32)]  # fmt: skip
    assert {s.wavefronts for s in swizzled} == {1}  # word swizzle, Swizzle<4, 1, 5>
    assert all(bank.swizzle(r * 32 + c, 4, 1, 5) == r * 32 + (c ^ (r & 30))
               for r in range(32) for c in range(32))  # fmt: skip
    # the stores of a column (Bt[tx][ty], fixed ty) are the same addresses
    assert simulate(half_words([tx * 32 + 3 for tx in range(32)]), 4, "st").wavefronts == 16
    assert simulate(half_words([tx * 34 + 3 for tx in range(32)]), 4, "st").wavefronts == 1
    # tiled_h: 32 halves of a row are 16 words, two threads per word: no conflict
    assert simulate(half_words(range(32)), 4, "st").conflicts == 0
    # the unpadded tile as ptxas reads it, four k per LDS.64: 16 of a possible 2 wavefronts
    assert simulate([tx * 64 + 2 * 4 for tx in range(32)], 8, "ld").wavefronts == 16


def test_register_blocked_half_b_reads_are_conflict_free_only_as_16_byte_vectors():
    # regblock_h: thread t reads TN = 8 halves of B from half (t % 16) * 8 of a row
    as_one = [(t % 16) * 16 for t in range(32)]  # one HalfN<8>, 16 bytes
    as_two = [(t % 16) * 16 + 8 * v for v in (0, 1) for t in range(32)]  # what nvcc does alone
    assert simulate(as_one, 16, "ld").conflicts == 0
    assert simulate(as_two[:32], 8, "ld").wavefronts == 4  # 2-way: rows of 16 B, stride 16
    # fp32's regblock: 8 floats are two float4 at a 32-byte stride, 2-way as well
    assert simulate([(t % 16) * 32 for t in range(32)], 16, "ld").wavefronts == 8


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


def elements(indices, size, width, op="ld"):
    """Bank conflicts of one warp instruction over elements of `size` bytes (None = inactive),
    each thread moving `width` bytes from its element on. A 2-byte access is the 4-byte access
    of the word that holds it (as `simulate` asks): two threads on one word share it."""

    def address(i):
        return None if i is None else i * size // max(width, 4) * max(width, 4)

    return simulate([address(i) for i in indices], max(width, 4), op).conflicts


def regblock_conflicts(bm, bn, bk, tm, tn, size=4):
    """(ld, st) conflicts of one block of steps 6-7 (size 4) or 6h-7h (size 2: halves): per k
    (inner loop) and per tile of K. A thread's TM values of A, and its TN of B, are one vector
    read of up to 16 bytes each (float4: TM / 4 of them for fp32, HalfN<TM>: one for halves)."""
    threads, ld, st = (bm // tm) * (bn // tn), 0, 0
    a_step, b_step = threads // (bk // 4), threads // (bn // 4)  # rows stored per pass
    a_width, b_width = min(16, tm * size), min(16, tn * size)
    for w in range(0, threads, 32):
        t = range(w, w + 32)
        for v in range(0, tm, a_width // size):  # a[TM] = As[k][tRow..] (any k: BM % 32 == 0)
            ld += elements([x // (bn // tn) * tm + v for x in t], size, a_width)
        for v in range(0, tn, b_width // size):  # b[TN] = Bs[k][tCol..]
            ld += elements([x % (bn // tn) * tn + v for x in t], size, b_width)
        for r0 in range(0, bm, a_step):  # As[(aCol + i) * BM + r] = v.x .. v.w, one at a time
            for i in range(4):
                rows = [x // (bk // 4) + r0 for x in t]
                at = [(x % (bk // 4) * 4 + i) * bm + r if r < bm else None
                      for x, r in zip(t, rows, strict=True)]  # fmt: skip
                st += elements(at, size, size, "st")
        for r0 in range(0, bk, b_step):  # Bs[r * BN + bCol]: 4 elements as one vector
            rows = [x // (bn // 4) + r0 for x in t]
            at = [r * bn + x % (bn // 4) * 4 if r < bk else None
                  for x, r in zip(t, rows, strict=True)]  # fmt: skip
            st += elements(at, size, 4 * size, "st")
    return ld * bk, st  # per tile of K: BK steps of the inner loop, one pass of stores


def simple_half_conflicts(name):
    """(ld, st) conflicts of one 32 x 32 block of steps 2h-5h over one tile of K, instruction by
    instruction as nvcc 13.0 compiles them for sm_90 (cuobjdump -sass): As[ty][tx] and the B
    element are stored as 2-byte STS.U16; As[ty][k..k+3] is read as one LDS.64 (a broadcast);
    the B tile as LDS.U16 per k, except the unpadded transposed tile (LDS.64, four k at once)
    and the one padded by a word (32-bit LDS, two k at once: rows of 68 bytes keep pairs
    4-byte aligned)."""
    width = {"tiled_transposed_pad1_h": 33, "tiled_transposed_pad_h": 34}.get(name, 32)

    def b_at(tx, k):  # the B tile's element (k, tx) as a half offset
        if name == "tiled_h":
            return k * 32 + tx  # Bs[k][tx]
        if name == "swizzled_h":
            return tx * 32 + (k ^ (tx & 30))  # Bt[tx][k ^ (tx & 30)]
        return tx * width + k  # Bt[tx][k]

    b_width = {"tiled_transposed_conflict_h": 8, "tiled_transposed_pad_h": 4}.get(name, 2)
    ld = st = 0
    for ty in range(32):
        st += elements([ty * 32 + tx for tx in range(32)], 2, 2, "st")
        st += elements([b_at(tx, ty) if name != "tiled_h" else ty * 32 + tx
                        for tx in range(32)], 2, 2, "st")  # fmt: skip
        ld += 8 * elements([ty * 32] * 32, 2, 8)  # As[ty][k..k+3]: one address for the warp
        for k in range(0, 32, b_width // 2):
            ld += elements([b_at(tx, k) for tx in range(32)], 2, b_width)
    return ld, st


def wmma_conflicts():
    """(ld, st) conflicts of one block of step 8h (4 warps, a 64 x 64 tile) over one tile of K
    (32): ldmatrix of 8 A and 8 B fragments' 8 x 8 pieces, 16-byte stores of the A and B tiles.
    The epilogue (once per block, not per tile: fp32 fragments to Cs, Cs to C) is left out; it
    is conflict-free with the fragment layout of mma.m16n8k16 (test below)."""
    ld = st = 0
    for w in range(4):
        wm, wn = w // 2 * 32, w % 2 * 32
        for kk in (0, 16):
            for i in (0, 1):  # A fragment rows wm + 16i.., columns kk..: four 8 x 8 matrices
                rows = [(wm + 16 * i + m % 2 * 8 + t) * 40 + kk + m // 2 * 8
                        for m in range(4) for t in range(8)]  # fmt: skip
                ld += simulate([2 * e for e in rows], 16, "ldmatrix").conflicts
            for j in (0, 1):  # B fragment rows kk.. (k), columns wn + 16j..
                rows = [(kk + m % 2 * 8 + t) * 72 + wn + 16 * j + m // 2 * 8
                        for m in range(4) for t in range(8)]  # fmt: skip
                ld += simulate([2 * e for e in rows], 16, "ldmatrix").conflicts
        for p in (0, 128):  # two passes of 128 threads, 8 halves each
            v = [p + 32 * w + t for t in range(32)]
            st += simulate([(x // 4 * 40 + x % 4 * 8) * 2 for x in v], 16, "st").conflicts
            st += simulate([(x // 8 * 72 + x % 8 * 8) * 2 for x in v], 16, "st").conflicts
    return ld, st


def test_wmma_padding_is_what_makes_ldmatrix_and_the_fp32_fragment_stores_conflict_free():
    def ldmatrix(row_halves):  # four 8 x 8 pieces of a 16 x 16 half fragment
        rows = [(m % 2 * 8 + t) * row_halves + m // 2 * 8 for m in range(4) for t in range(8)]
        return simulate([2 * e for e in rows], 16, "ldmatrix").wavefronts

    assert (ldmatrix(40), ldmatrix(32)) == (4, 16)  # A: 80-byte rows, against 64 (4-way)
    assert (ldmatrix(72), ldmatrix(64)) == (4, 32)  # B: 144-byte rows, against 128 (8-way)

    def fragment_store(row_floats):  # lane holds (lane / 4, 2 (lane % 4) + {0, 1}), as STS.64
        return simulate([(lane // 4 * row_floats + lane % 4 * 2) * 4 for lane in range(32)],
                        8, "st").conflicts  # fmt: skip

    assert (fragment_store(40), fragment_store(36)) == (0, 2)


def test_address_conflicts_are_what_the_simulator_derives_from_each_instruction():
    n = smem_gemm.NCU_REF
    shapes = {"regblock": (128, 128, 8, 8, 8), "regblock_h": (128, 128, 8, 8, 8)}
    shapes |= {smem_gemm._templated(*s).name: s for s in smem_gemm.SHAPES}
    shapes |= {smem_gemm._templated(*s, dtype="fp16").name: s for s in smem_gemm.HALF_SHAPES}
    for kernel in smem_gemm.KERNELS:
        size = 2 if kernel.dtype == "fp16" else 4
        if kernel.name == "naive":  # no shared memory
            derived = (0, 0)
        elif kernel.name == "wmma_h":
            derived = tuple(c * (n // 64) ** 2 * (n // 32) for c in wmma_conflicts())
        elif kernel.name in shapes:
            bm, bn, bk, *_ = shape = shapes[kernel.name]
            derived = tuple(c * (n // bm) * (n // bn) * (n // bk)
                            for c in regblock_conflicts(*shape, size=size))  # fmt: skip
        elif kernel.dtype == "fp16":
            derived = tuple(c * (n // 32) ** 3 for c in simple_half_conflicts(kernel.name))
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


def test_each_row_carries_its_dtype_and_rows_without_one_read_as_fp32():
    timed = [{"kernel": "cublas", "ms": 1.0, "gflops": 50.0, "fraction_of_cublas": 1.0,
              "max_rel_err": 0.0},  # as a run before fp16 wrote it: no dtype
             {"kernel": "cublas_h", "dtype": "fp16", "ms": 0.1, "gflops": 500.0,
              "fraction_of_cublas": 1.0, "max_rel_err": 0.0},
             {"kernel": "regblock_h", "dtype": "fp16", "ms": 1.0, "gflops": 50.0,
              "fraction_of_cublas": 0.1, "max_rel_err": 1e-3}]  # fmt: skip
    rows = smem_gemm.rows(timed, {}, {})
    assert [r["dtype"] for r in rows] == ["fp32", "fp16", "fp16"]
    assert [r["kernel"] for r in smem_gemm.of_dtype(timed)] == ["cublas"]
    assert [r["kernel"] for r in smem_gemm.of_dtype(rows, "fp16")] == ["cublas_h", "regblock_h"]
    text = smem_gemm.summary(rows)
    assert "dtype" in text.splitlines()[0] and "fp16" in text.splitlines()[-1]
    assert "dtype" not in smem_gemm.summary(rows[:1])  # an fp32-only run prints as before


def test_residue_keeps_one_dtype_and_reads_old_rows_as_fp32():
    rows = [{"kernel": "swizzled", "ld_conflicts": 7, "ld_wavefronts": 700, "st_conflicts": 0,
             "st_wavefronts": 10},
            {"kernel": "swizzled_h", "dtype": "fp16", "ld_conflicts": 3, "ld_wavefronts": 300,
             "st_conflicts": 0, "st_wavefronts": 10}]  # fmt: skip
    record = {"config": {"ncu_size": smem_gemm.NCU_REF}, "results": rows}
    assert [r["kernel"] for r in smem_gemm.residue(record)] == ["swizzled"]
    assert [r["ld_residue"] for r in smem_gemm.residue(record, "fp16")] == [3]
    assert len(smem_gemm.residue(record, None)) == 2


def test_every_fp16_kernel_is_named_h_and_has_address_conflicts():
    half = [k for k in smem_gemm.KERNELS if k.dtype == "fp16"]
    assert len(half) >= 7 and all(k.name.endswith("_h") for k in half)
    assert all(k.name in smem_gemm.ADDRESS_CONFLICTS for k in smem_gemm.KERNELS)
    assert smem_gemm.CUBLAS["fp16"] not in smem_gemm.BY_NAME  # baselines are rows, not kernels


def test_a_kernel_refuses_arrays_of_the_other_dtype():
    a = np.empty((128, 128), np.float32)
    with pytest.raises(ValueError, match="tiled_h takes float16"):
        smem_gemm.launch(None, smem_gemm.BY_NAME["tiled_h"], a, a, a)


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
    bounds = record["config"].get("rel_err_bounds", {})  # runs before fp16 have one fp32 bound
    for name, r in rows.items():
        bound = bounds.get(r.get("dtype", "fp32"), record["config"]["rel_err_bound"])
        # tiled_nosync is a race: right or wrong by luck, so its error is reported, not required
        if name != "tiled_nosync":
            assert r["max_rel_err"] is not None and r["max_rel_err"] < bound, name
    # the target, fp32 only: against cuBLAS SGEMM (fp16 ratios are reported as found)
    hand_written = [r["fraction_of_cublas"] for r in smem_gemm.of_dtype(record["results"])
                    if r["kernel"] != "cublas"]  # fmt: skip
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
    # and padded, on the H100 and the H200 alike (~30k at 1024^3); 0.005-0.008 % in 64x64;
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
    if "cublas_h" in rows and rows["swizzled_h"]["ld_conflicts"] is not None:
        # fp16: the word swizzle and the word of padding are conflict-free by their addresses,
        # the unpadded tile (16-way) is not, and half a word of padding leaves a 2-way conflict
        # on odd k; no residue is ever negative. The first H100 run's load residue: at most
        # 0.06 % of the wavefronts on the CUDA cores, 0.3 % in wmma_h (few loads), so no bound.
        assert rows["swizzled_h"]["ld_conflicts"] == 0
        pad, bad = rows["tiled_transposed_pad_h"], rows["tiled_transposed_conflict_h"]
        assert bad["ld_conflicts"] > 1000 * max(1, pad["ld_conflicts"])
        assert rows["tiled_transposed_pad1_h"]["ld_conflicts"] > 100 * max(1, pad["ld_conflicts"])
        for r in smem_gemm.residue(record, "fp16"):
            assert r["ld_residue"] >= 0 and r["st_residue"] >= 0, r


@pytest.mark.skipif(len(NEWEST) < 2, reason="needs smem-gemm-*.json from two devices")
def test_counts_the_addresses_decide_are_identical_on_every_gpu():
    # Same kernels, same addresses: ncu's ideal wavefronts (wavefronts - conflicts) of every
    # kernel, and the load conflicts of those without a residue, agree to the last digit on
    # every GPU; only the residue (timing) may differ.
    # (tiled_transposed_conflict_h is not among them: the first H100 fp16 run counted 46,018
    # load conflicts beyond its addresses' 117,440,512, a residue, where fp32's twin has none)
    exact = ["tiled_transposed_conflict", "swizzled", "regblock", "templated_128x64x16_8x4",
             "swizzled_h", "regblock_h"]  # fmt: skip
    seen = {}
    for device, path in NEWEST.items():
        rows = [r for r in load_results(path)["results"] if r["ld_conflicts"] is not None]
        seen[device] = {r["kernel"]: (r["ld_wavefronts"] - r["ld_conflicts"],
                                      r["st_wavefronts"] - r["st_conflicts"],
                                      r["ld_conflicts"] if r["kernel"] in exact else None)
                        for r in rows}  # fmt: skip
    fp32 = {k.name for k in smem_gemm.KERNELS if k.dtype == "fp32"}
    assert all(fp32 <= set(kernels) for kernels in seen.values())  # every run has every fp32 step
    # fp16 steps exist only in runs since they were added: compare what every device has
    common = set.intersection(*(set(kernels) for kernels in seen.values()))
    first, *others = (
        {k: v for k, v in kernels.items() if k in common} for kernels in seen.values()
    )
    assert all(other == first for other in others), seen


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", smem_gemm.DTYPES)
def test_every_kernel_matches_cublas_of_its_dtype_on_fresh_inputs(dtype):
    cp = pytest.importorskip("cupy")
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    module, n = smem_gemm.load_module(), 256
    torch_dtype = torch.float16 if dtype == "fp16" else torch.float32
    gen = torch.Generator(device="cuda").manual_seed(1234)
    ta, tb = (torch.randn(n, n, device="cuda", generator=gen).to(torch_dtype) for _ in range(2))
    ref = torch.matmul(ta, tb).float()
    a, b = cp.asarray(ta), cp.asarray(tb)
    for kernel in (k for k in smem_gemm.KERNELS if k.dtype == dtype):
        if kernel.name == "tiled_nosync":  # a race: right or wrong by luck
            continue
        c = cp.full((n, n), float("nan"), dtype=a.dtype)
        smem_gemm.launch(module, kernel, a, b, c)
        err = float((torch.as_tensor(c, device="cuda").float() - ref).abs().max() / ref.abs().max())
        assert err < smem_gemm.REL_ERR_BOUNDS[dtype], (kernel.name, err)
