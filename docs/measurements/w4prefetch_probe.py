# ruff: noqa
"""W4A16 GEMM at decode rows: the loop asking for the next piece's weights before it multiplies
this one's (now) against the same kernel without (1def2fe, in .gpu/w4prev.py: git show
1def2fe:minirt/kernels/w4a16_gemm.py), the GEMV and cuBLAS bf16; each with its default tiles,
weights from DRAM in a CUDA graph (bench quant's _copies / _time_ms). Then bench quant's decode
rows (every method, batches 1-128) with the engine's defaults."""

import json, os, sys, time
import torch
import triton
import minirt.kernels.w4a16_gemm as W
from minirt.bench.quant import _copies, _time_ms, decode_rows
from minirt.quant import formats as F

sys.path.insert(0, os.path.join(os.getcwd(), ".gpu"))
import w4prev

out = sys.argv[1]
SHAPES = {"qkv": (4096, 1024), "o": (1024, 2048), "gate_up": (6144, 1024), "down": (1024, 3072)}
g = torch.Generator(device="cuda").manual_seed(0)
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "cases": [],
}
for m in (8, 16, 32):
    for name, (n, k) in SHAPES.items():
        w = torch.randn(n, k, device="cuda", generator=g) * 0.02
        wb, q = w.bfloat16(), F.quantize_int4(w, 128, interleaved=True)
        x = torch.randn(m, k, device="cuda", generator=g).bfloat16()
        ref = W.w4a16_gemm_ref(x, q).float()
        sets = _copies(q.packed, q.scales)
        row = {
            "shape": name,
            "M": m,
            "N": n,
            "K": k,
            "bf16_us": _time_ms(lambda w_: torch.nn.functional.linear(x, w_), _copies(wb)) * 1e3,
        }
        for label, mod, c in (
            ("gemm_prefetch", W, {"kernel": "gemm"}),
            ("gemm_before", w4prev, {"kernel": "gemm"}),
            ("gemv", W, {"kernel": "gemv"}),
        ):
            fn = lambda p, s: mod.w4a16_gemm(x, F.Int4Weight(p, s, None, q.shape, 128, True), c)
            y = fn(q.packed, q.scales).float()
            row[label + "_us"] = _time_ms(fn, sets) * 1e3
            row[label + "_rel_err"] = ((y - ref).norm() / ref.norm()).item()
        row["engine_kernel"] = "gemv" if W.use_gemv(m, n, k) else "gemm"
        print(
            {
                k_: (round(v, 2) if isinstance(v, float) and k_.endswith("us") else v)
                for k_, v in row.items()
            },
            flush=True,
        )
        res["cases"].append(row)
        json.dump(res, open(f"{out}/w4prefetch.json", "w"), indent=1)
methods = os.environ.get("METHODS")  # e.g. "bf16,w4a16-g128"; every method by default
methods = tuple(None if m == "bf16" else m for m in methods.split(",")) if methods else None
rows = decode_rows(methods=methods, progress=False) if methods else decode_rows(progress=False)
res["decode_rows"] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
json.dump(res, open(f"{out}/w4prefetch.json", "w"), indent=1)
for r in rows:
    print("decode", r["method"], r["batch"], round(r["tokens_per_s"]), flush=True)
