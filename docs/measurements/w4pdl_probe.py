# ruff: noqa
"""W4A16 GEMM at decode rows (8-32) with its first piece of weights loaded before the PDL wait:
per-GEMM times in a CUDA graph of DRAM-resident copies (bench quant's _copies / _time_ms), PDL on
and off, against cuBLAS bf16 and the GEMV; a tile sweep; then end-to-end decode (decode_rows):
the defaults (norm and SiLU·mul inside the GEMM past the GEMV's rows), without those fusions,
with the sweep's best tiles patched in, and with the GEMM for every shape past 4 rows."""

import json, sys, time
import torch
import triton
import minirt.kernels.pdl as P
import minirt.kernels.w4a16_gemm as W
from minirt.bench.quant import _copies, _time_ms, decode_rows
from minirt.quant import formats as F
from minirt.quant.linear import QuantLinear

out = sys.argv[1]
SHAPES = {"qkv": (4096, 1024), "o": (1024, 2048), "gate_up": (6144, 1024), "down": (1024, 3072)}
MS = (8, 16, 32)
TILES = [
    (bn, bk, w, s) for bn in (16, 32, 64) for bk in (64, 128) for w, s in ((4, 4), (4, 6), (8, 4))
]
g = torch.Generator(device="cuda").manual_seed(0)
ws = {}
for name, (n, k) in SHAPES.items():
    w = torch.randn(n, k, device="cuda", generator=g) * 0.02
    ws[name] = (w.bfloat16(), F.quantize_int4(w, 128, interleaved=True))
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "cases": [],
}
best = {}
t0 = time.time()


def run(x, q, c):
    return lambda p, s: W.w4a16_gemm(x, F.Int4Weight(p, s, None, q.shape, 128, True), c)


for m in MS:
    for name, (n, k) in SHAPES.items():
        wb, q = ws[name]
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
        row["gemm_default_pdl_us"] = _time_ms(run(x, q, {"kernel": "gemm"}), sets) * 1e3
        P.ENABLED = False
        row["gemm_default_nopdl_us"] = _time_ms(run(x, q, {"kernel": "gemm"}), sets) * 1e3
        P.ENABLED = True
        if m <= 16:
            row["gemv_default_us"] = _time_ms(run(x, q, {"kernel": "gemv"}), sets) * 1e3
        row["engine_kernel"] = "gemv" if W.use_gemv(m, n, k) else "gemm"
        row["tiles"] = []
        for bn, bk, nw, st in TILES:
            c = dict(
                kernel="gemm",
                BLOCK_M=16 if m <= 16 else 32,
                BLOCK_N=bn,
                BLOCK_K=bk,
                num_warps=nw,
                num_stages=st,
            )
            try:
                y = W.w4a16_gemm(x, q, c).float()
                err = ((y - ref).norm() / ref.norm()).item()
                t = _time_ms(run(x, q, c), sets) * 1e3
            except Exception as e:  # noqa
                print("fail", c, repr(e)[:200], flush=True)
                continue
            row["tiles"].append({**c, "us": t, "rel_err": err})
        row["tiles"].sort(key=lambda r: r["us"])
        best[(n, k, m)] = row["tiles"][0]
        print(
            f"M{m:3} {name:8} bf16 {row['bf16_us']:6.2f} gemm pdl {row['gemm_default_pdl_us']:6.2f} "
            f"nopdl {row['gemm_default_nopdl_us']:6.2f} gemv {row.get('gemv_default_us', 0):6.2f} "
            f"best {row['tiles'][0]['us']:6.2f} {row['tiles'][0]} [{time.time() - t0:.0f}s]",
            flush=True,
        )
        res["cases"].append(row)
        json.dump(res, open(f"{out}/w4pdl.json", "w"), indent=1)

# end to end: defaults, then the best tile per (shape, M bucket) for the GEMM at 3-32 rows
orig_cfg, orig_use = W.default_config, W.use_gemv


def best_cfg(kernel, m, n, k):
    if kernel == "gemm" and 3 <= m <= 32 and (n, k, 8) in best:
        mm = 8 if m <= 8 else 16 if m <= 16 else 32
        b = dict(best[(n, k, mm)])
        for key in ("kernel", "us", "rel_err"):
            b.pop(key)
        return b
    return orig_cfg(kernel, m, n, k)


def gemm_beyond_4(m, n, k):  # the GEMM for every shape past 4 rows
    return m <= W.GEMV_MAX_ROWS


res["decode"] = []
orig_prologue = QuantLinear.with_prologue
for label, cfg, use, fuse in (
    ("default", orig_cfg, orig_use, True),
    ("no-fusion", orig_cfg, orig_use, False),
    ("best-tiles", best_cfg, orig_use, True),
    ("best-tiles-gemm-past-4", best_cfg, gemm_beyond_4, True),
):
    W.default_config, W.use_gemv = cfg, use
    QuantLinear.with_prologue = orig_prologue if fuse else (lambda *a, **k: None)
    meths = (None, "w4a16-g128") if label == "default" else ("w4a16-g128",)
    for r in decode_rows(methods=meths, batches=(1, 2, 4, 8, 16, 32), progress=False):
        r["form"] = label
        print(
            f"decode {r['method']:12} {label:22} b{r['batch']:3} {r['tokens_per_s']:9.0f}",
            flush=True,
        )
        res["decode"].append(r)
    json.dump(res, open(f"{out}/w4pdl.json", "w"), indent=1)
W.default_config, W.use_gemv = orig_cfg, orig_use
QuantLinear.with_prologue = orig_prologue
