# ruff: noqa
"""FP8/INT8 W8A8 at one row: the GEMV (`scaled_gemm_dynamic`, kernel "gemv": the row's scale and
codes made in every program, no tensor cores) against the fused tensor-core GEMM's default tiles
and cuBLAS bf16, weights from DRAM; at 2 and 4 rows the GEMV (one row a program) against the
GEMM; then decode end to end at batch 1 / 2 / 4 with the best GEMV tile per shape."""

import json, sys, time
import torch, triton
import minirt.kernels.scaled_gemm as S
from minirt.bench.quant import _copies, _time_ms, decode_rows
from minirt.quant import formats as F

out = sys.argv[1]
QUICK = len(sys.argv) > 2  # one row, 4 tiles, batch 1 only: a short device call
ROWS = (1,) if QUICK else (1, 2, 4)
SHAPES = {"qkv": (4096, 1024), "o": (1024, 2048), "gate_up": (6144, 1024), "down": (1024, 3072)}
TILES = [
    dict(BLOCK_N=bn, BLOCK_K=bk, num_warps=w)
    for bn, bk, w in (
        (4, 512, 4),
        (8, 512, 4),
        (4, 1024, 8),
        (8, 1024, 8),
        (16, 512, 8),
        (8, 512, 8),
        (4, 1024, 4),
    )
]
g = torch.Generator(device="cuda").manual_seed(0)
cases, best = [], {}
t0 = time.time()


def dump():
    json.dump(
        {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "triton": triton.__version__,
            "cases": cases,
            "best": {f"{k[0]}@{k[1]}@{k[2]}": v for k, v in best.items()},
        },
        open(f"{out}/f8gemv.json", "w"),
        indent=1,
    )


for m in ROWS:
    for name, (n, k) in SHAPES.items():
        w = torch.randn(n, k, device="cuda", generator=g) * 0.02
        x = torch.randn(m, k, device="cuda", generator=g).bfloat16()
        bf = _time_ms(lambda w_: torch.nn.functional.linear(x, w_), _copies(w.bfloat16())) * 1e3
        for fmt in ("fp8", "int8") if m == 1 else ("fp8",):
            if fmt == "fp8":
                q = F.quantize_fp8(w)
                wq, ws = q.data, q.scales
            else:
                wq, ws = F.quantize_int8_rows(w)
            ref = S.scaled_gemm_dynamic_ref(x, wq, ws).float()
            sets = _copies(wq, ws)
            gemm = (
                _time_ms(
                    lambda d, s: S.scaled_gemm_dynamic(x, d, s, config={"kernel": "gemm"}), sets
                )
                * 1e3
            )
            row = {
                "shape": name,
                "fmt": fmt,
                "M": m,
                "N": n,
                "K": k,
                "bf16_us": bf,
                "gemm_default_us": gemm,
                "gemv": [],
            }
            tiles = (TILES[:4] if QUICK else TILES) if m == 1 else [best[(name, fmt, 1)]]
            for c in tiles:
                c = {kk: c[kk] for kk in ("BLOCK_N", "BLOCK_K", "num_warps")}
                cc = {"kernel": "gemv", **c}
                try:
                    y = S.scaled_gemm_dynamic(x, wq, ws, config=cc).float()
                    err = ((y - ref).norm() / ref.norm()).item()
                    t = _time_ms(lambda d, s: S.scaled_gemm_dynamic(x, d, s, config=cc), sets) * 1e3
                except Exception as e:
                    print("fail", c, repr(e)[:300], flush=True)
                    continue
                row["gemv"].append({**c, "us": t, "rel_err": err})
            row["gemv"].sort(key=lambda r: r["us"])
            b = row["gemv"][0]
            best[(name, fmt, m)] = b
            print(
                f"M{m} {fmt:4} {name:8} bf16 {bf:6.2f} gemm {gemm:6.2f} gemv {b['us']:6.2f} "
                f"({bf / b['us']:.2f}x bf16) {b} [{time.time() - t0:.0f}s]",
                flush=True,
            )
            cases.append(row)
            dump()

if len(sys.argv) > 3:  # per GEMM only
    sys.exit(0)
orig = S._launch_gemv
NAMES = {(n, k): s for s, (n, k) in SHAPES.items()}


def tuned(x, wq, w_scale, out_dtype, config):
    fmt = "int8" if wq.dtype == torch.int8 else "fp8"
    name = NAMES.get(tuple(wq.shape))
    if name and not config:
        b = best[(name, fmt, 1)]
        config = {kk: b[kk] for kk in ("BLOCK_N", "BLOCK_K", "num_warps")}
    return orig(x, wq, w_scale, out_dtype, config)


rows = []
for meth, form, rows_max in (
    (None, "-", 1),
    ("fp8-dynamic", "tuned", 1),
    ("int8", "tuned", 1),
    *(() if QUICK else (("fp8-dynamic", "tuned", 4), ("int8", "tuned", 4))),
):
    S._launch_gemv = tuned if form == "tuned" else orig
    S.GEMV_MAX_ROWS = rows_max
    got = decode_rows(methods=(meth,), batches=ROWS, progress=False)
    for r in got:
        r["form"], r["gemv_max_rows"] = form, rows_max
        print(
            f"decode {r['method']:12} {form:8} gemv<= {rows_max} b{r['batch']:3} {r['tokens_per_s']:9.0f} [{time.time() - t0:.0f}s]",
            flush=True,
        )
    rows += got
    json.dump({"decode": rows}, open(f"{out}/f8gemv_decode.json", "w"), indent=1)
