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
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="Triton is installed on Linux x86-64 only")
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
if not (BIN / "ptxas").exists() or not (BIN / "cuobjdump").exists():
    pytest.skip("this Triton wheel carries no ptxas / cuobjdump", allow_module_level=True)

COMPILE = """
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from minirt.kernels.w4a16_gemm import _gemv_kernel

signature, constexprs, cubin = json.loads(sys.argv[1])
sig = {**signature, **{name: "constexpr" for name in constexprs}}
src = ASTSource(fn=_gemv_kernel, signature=sig, constexprs=constexprs)
compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
open(cubin, "wb").write(compiled.asm["cubin"])
"""


def _sass(signature: dict, constexprs: dict, tmp_path: Path) -> str:
    cubin = tmp_path / "kernel.cubin"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    arg = json.dumps([signature, constexprs, str(cubin)])
    subprocess.run([sys.executable, "-c", COMPILE, arg], env=env, check=True)
    cmd = [str(BIN / "cuobjdump"), "-sass", str(cubin)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("block_m", [1, 4])
@pytest.mark.parametrize("zeros", [False, True])
def test_the_w4a16_gemv_s_bf16_pair_path_builds_into_bf16x2_fmas(tmp_path, block_m, zeros):
    signature = {"x_ptr": "*bf16", "packed_ptr": "*i32", "scales_ptr": "*fp32",
                 "zeros_ptr": "*u8", "y_ptr": "*bf16", "M": "i32", "N": "i32",
                 "K": "i32"}  # fmt: skip
    constexprs = {"G": 128, "GROUPS": 8, "HAS_ZEROS": zeros, "SPLIT_K": 1, "BLOCK_M": block_m,
                  "BLOCK_N": 4, "BLOCK_K": 1024, "BF16X2": True}  # fmt: skip
    sass = _sass(signature, constexprs, tmp_path)
    # the asm's bf16x2 multiply and fused multiply-add survive into the machine code (the fp32
    # path, BF16X2=False, has neither)
    assert "HMUL2.BF16" in sass and "HFMA2.BF16" in sass
