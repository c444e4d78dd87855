# ruff: noqa
"""W4A16 at 2-4 rows: the GEMV with a row of x a program (grid axis 2, the weight read again
from L2 by each row) against the tensor-core GEMM's defaults and cuBLAS bf16, Qwen3-0.6B's
projections, weights from DRAM; then decode at batch 1-4 with the GEMV up to 1, 2, 3 or 4 rows.
python3 docs/measurements/w4rows_probe.py OUT  (about a minute on an H100)."""

import json, sys, time
import torch, triton
import minirt.kernels.w4a16_gemm as W
from minirt.bench.quant import _copies, _time_ms, decode_rows
from minirt.quant.formats import Int4Weight, quantize_int4

out = sys.argv[1]
SHAPES = {"qkv": (4096, 1024), "o": (1024, 2048), "gate_up": (6144, 1024), "down": (1024, 3072)}
g = torch.Generator(device="cuda").manual_seed(0)
t0, cases = time.time(), []
for name, (n, k) in SHAPES.items():
    w = torch.randn(n, k, device="cuda", generator=g) * 0.02
    q = quantize_int4(w.float().cpu(), 128, True, interleaved=True)
    packed, scales = q.packed.cuda(), q.scales.cuda()
    sets, bsets = _copies(packed, scales), _copies(w.bfloat16())
    for m in (1, 2, 3, 4):
        x = torch.randn(m, k, device="cuda", generator=g).bfloat16()
        one = lambda p, s: Int4Weight(p, s, None, (n, k), 128, True)
        ref = W.w4a16_gemm_ref(x, one(packed, scales)).float()
        row = {"shape": name, "M": m, "N": n, "K": k}
        row["bf16_us"] = _time_ms(lambda w_: torch.nn.functional.linear(x, w_), bsets) * 1e3
        for kern in ("gemv", "gemm"):
            cfg = {"kernel": kern}
            y = W.w4a16_gemm(x, one(packed, scales), config=cfg).float()
            row[f"{kern}_rel_err"] = ((y - ref).norm() / ref.norm()).item()
            row[f"{kern}_us"] = (
                _time_ms(lambda p, s: W.w4a16_gemm(x, one(p, s), config=cfg), sets) * 1e3
            )
        cases.append(row)
        print(
            f"{name:8} M{m} bf16 {row['bf16_us']:6.2f} gemv {row['gemv_us']:6.2f} gemm {row['gemm_us']:6.2f} "
            f"err {row['gemv_rel_err']:.1e} [{time.time() - t0:.0f}s]",
            flush=True,
        )
json.dump(
    {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cases": cases,
    },
    open(f"{out}/w4rows.json", "w"),
    indent=1,
)
rows = []
for meth, most in ((None, 1), ("w4a16-g128", 1), ("w4a16-g128", 2), ("w4a16-g128", 4)):
    W.GEMV_MAX_ROWS = most
    for r in decode_rows(methods=(meth,), batches=(1, 2, 3, 4), progress=False):
        r["gemv_max_rows"] = most
        rows.append(r)
        print(
            f"decode {r['method']:10} gemv<= {most} b{r['batch']} {r['tokens_per_s']:7.0f} [{time.time() - t0:.0f}s]",
            flush=True,
        )
    json.dump({"cases": cases, "decode": rows}, open(f"{out}/w4rows.json", "w"), indent=1)
