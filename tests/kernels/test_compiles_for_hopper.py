"""The kernels whose GPU path no CPU test runs compile for Hopper (sm_90) without a GPU.

Under the interpreter a kernel's `if BF16X2:` branch (inline PTX) never runs, so a mistake there
would first show on a GPU machine. Triton's wheel carries `ptxas`: compiling for a target needs
no device. What runs is checked by the `gpu` tests; this only says that it builds, into the
instructions it was written for. The compile runs in a fresh process without TRITON_INTERPRET
(the tests' processes interpret every kernel).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="Triton is installed on Linux x86-64 only")
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
if not (BIN / "ptxas").exists() or not (BIN / "cuobjdump").exists():
    pytest.skip("this Triton wheel carries no ptxas / cuobjdump", allow_module_level=True)

COMPILE = """
import importlib, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

module, kernel, signature, constexprs, warps, out = json.loads(sys.argv[1])
fn = getattr(importlib.import_module(module), kernel)
sig = {**signature, **{name: "constexpr" for name in constexprs}}
src = ASTSource(fn=fn, signature=sig, constexprs=constexprs)
compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
open(out + ".cubin", "wb").write(compiled.asm["cubin"])
open(out + ".ptx", "w").write(compiled.asm["ptx"])
"""


def _compile(kernel: str, signature: dict, constexprs: dict, tmp_path: Path, warps=8) -> Path:
    """Build minirt.kernels.<kernel> ("module.function") for sm_90: the path of its files
    (.cubin, .ptx) without their suffix."""
    module, fn = kernel.rsplit(".", 1)
    out = tmp_path / "kernel"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    arg = json.dumps([f"minirt.kernels.{module}", fn, signature, constexprs, warps, str(out)])
    subprocess.run([sys.executable, "-c", COMPILE, arg], env=env, check=True)
    return out


W4A16 = {"x_ptr": "*bf16", "packed_ptr": "*i32", "scales_ptr": "*fp32", "zeros_ptr": "*u8",
         "y_ptr": "*bf16", "M": "i32", "N": "i32", "K": "i32"}  # fmt: skip


@pytest.mark.parametrize("block_m", [1, 4])
@pytest.mark.parametrize("zeros", [False, True])
def test_the_w4a16_gemv_s_bf16_pair_path_builds_into_bf16x2_fmas(tmp_path, block_m, zeros):
    constexprs = {"G": 128, "GROUPS": 8, "HAS_ZEROS": zeros, "SPLIT_K": 1, "BLOCK_M": block_m,
                  "BLOCK_N": 4, "BLOCK_K": 1024, "BF16X2": True, "PDL": 1}  # fmt: skip
    out = _compile("w4a16_gemm._gemv_kernel", W4A16, constexprs, tmp_path)
    cmd = [str(BIN / "cuobjdump"), "-sass", str(out) + ".cubin"]
    sass = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    # the asm's bf16x2 multiply and fused multiply-add survive into the machine code (the fp32
    # path, BF16X2=False, has neither)
    assert "HMUL2.BF16" in sass and "HFMA2.BF16" in sass


GEMV = {**dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "y_ptr", "res_ptr", "new_res_ptr",
                         "norm_w_ptr"], "*bf16"), "max_ptr": "*fp32", "at_ptr": "*i32",
        "ws_ptr": "*fp32", "M": "i32", "N": "i32", "eps": "fp32", "stride_xm": "i32"}  # fmt: skip
GEMVS = {  # a decode step's GEMVs, and the W4A16 GEMM: (kernel, signature, constexprs, warps)
    "bf16, with the argmax": (
        "gemv._gemv_kernel", GEMV,
        {"K": 1024, "HAS_BIAS": False, "SILU_MUL": False, "NORM": True, "ADD_RESIDUAL": True,
         "ARGMAX": True, "W8A8": False, "IS_INT": False, "QMAX": 0.0, "BLOCK_M": 1,
         "BLOCK_N": 16, "BLOCK_K": 1024, "PDL": 1}, 8),
    "fp8 w8a8 after the norm": (
        "gemv._gemv_kernel", {**GEMV, "w_ptr": "*i8"},
        {"K": 1024, "HAS_BIAS": False, "SILU_MUL": False, "NORM": True, "ADD_RESIDUAL": True,
         "ARGMAX": False, "W8A8": True, "IS_INT": False, "QMAX": 448.0, "BLOCK_M": 1,
         "BLOCK_N": 16, "BLOCK_K": 1024, "PDL": 1}, 8),
    "int8 w8a8 after silu_mul": (
        "gemv._gemv_kernel", {**GEMV, "w_ptr": "*i8"},
        {"K": 3072, "HAS_BIAS": False, "SILU_MUL": True, "NORM": False, "ADD_RESIDUAL": False,
         "ARGMAX": False, "W8A8": True, "IS_INT": True, "QMAX": 127.0, "BLOCK_M": 1,
         "BLOCK_N": 4, "BLOCK_K": 4096, "PDL": 1}, 8),
    "fp8 w8a8": (
        "scaled_gemm._gemv_kernel",
        {"x_ptr": "*bf16", "w_ptr": "*fp8e4nv", "ws_ptr": "*fp32", "y_ptr": "*bf16", "N": "i32",
         "K": "i32", "stride_xm": "i32", "stride_wn": "i32", "stride_ym": "i32"},
        {"IS_INT": False, "QMAX": 448.0, "BLOCK_N": 4, "BLOCK_K": 1024, "PDL": 1}, 4),
    "w4a16": (
        "w4a16_gemm._gemv_kernel", W4A16,
        {"G": 128, "GROUPS": 8, "HAS_ZEROS": True, "SPLIT_K": 1, "BLOCK_M": 1, "BLOCK_N": 4,
         "BLOCK_K": 1024, "BF16X2": True, "PDL": 1}, 8),
    "w4a16 gemm (past the GEMV's rows)": (
        "w4a16_gemm._gemm_kernel", {**W4A16, "stride_xm": "i32", "stride_ym": "i32"},
        {"G": 128, "HAS_ZEROS": True, "BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 128, "PDL": 1}, 4),
    "lm head with the argmax (past the GEMV's rows)": (
        "lm_head._head_kernel",
        {**dict.fromkeys(["x_ptr", "w_ptr", "y_ptr"], "*bf16"), "max_ptr": "*fp32",
         "at_ptr": "*i32", "M": "i32", "N": "i32", "stride_xm": "i32", "P": "i32"},
        {"K": 1024, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "PDL": 1}, 8),
}  # fmt: skip


@pytest.mark.parametrize("name", list(GEMVS))
def test_each_decode_gemv_loads_weights_before_its_pdl_wait_and_stores_after(tmp_path, name):
    """minirt.kernels.pdl's rule, in the PTX each GEMV builds into on Hopper: global loads (its
    weights) are issued before `griddepcontrol.wait`, every store after it, and the next kernel
    is released only after the wait."""
    out = _compile(*GEMVS[name][:3], tmp_path, warps=GEMVS[name][3])
    # each instruction without its guard predicate ("@%p1 ld.global...")
    lines = Path(str(out) + ".ptx").read_text().splitlines()
    ptx = [re.sub(r"^@!?%p\d+\s+", "", line.strip()) for line in lines]
    wait = next(i for i, line in enumerate(ptx) if line.startswith("griddepcontrol.wait"))
    release = next(i for i, line in enumerate(ptx) if line.startswith("griddepcontrol.launch"))
    loads = [i for i, line in enumerate(ptx) if line.startswith("ld.global")]
    stores = [i for i, line in enumerate(ptx) if line.startswith(("st.global", "atom.global"))]
    assert loads[0] < wait < release and stores and min(stores) > wait
