# ruff: noqa
"""W4A16 at 1-16 rows: the GEMV with BLOCK_M rows of x a program (each word read once for them)
against the tensor-core GEMM's defaults and cuBLAS bf16, Qwen3-0.6B's projections, weights from
DRAM; then decode at batch 1-16 with the GEMV up to 16 rows at BLOCK_M 1, 4 and 16.
python3 docs/measurements/w4rows_probe.py OUT  (one to two minutes on an H100).
Written for the code it measured (GEMV_MAX_ROWS / GEMV_BLOCK_M, one rule for all shapes): the
engine now picks per shape (`use_gemv`, `gemv_block_m`), so its decode part no longer applies."""

import json, sys, time
import torch, triton
import minirt.kernels.w4a16_gemm as W
from minirt.bench.quant import _copies, _time_ms, decode_rows
from minirt.quant.formats import Int4Weight, quantize_int4

out = sys.argv[1]
SHAPES = {"qkv": (4096, 1024), "o": (1024, 2048), "gate_up": (6144, 1024), "down": (1024, 3072)}
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of the script
if DEV == "cpu":
    SHAPES = {"qkv": (64, 256), "o": (32, 512)}
ROWS = (1, 2, 4, 8, 16)
g = torch.Generator(device=DEV).manual_seed(0)
t0, cases = time.time(), []


def dump(decode=()):
    json.dump(
        {
            "device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu (a dry run)",
            "torch": torch.__version__,
            "triton": triton.__version__,
            "cases": cases,
            "decode": list(decode),
        },
        open(f"{out}/w4rows.json", "w"),
        indent=1,
    )


for name, (n, k) in SHAPES.items():
    w = torch.randn(n, k, device=DEV, generator=g) * 0.02
    q = quantize_int4(w.float().cpu(), 128, True, interleaved=True)
    packed, scales = q.packed.to(DEV), q.scales.to(DEV)
    sets, bsets = _copies(packed, scales), _copies(w.bfloat16())
    one = lambda p, s: Int4Weight(p, s, None, (n, k), 128, True)
    for m in ROWS:
        x = torch.randn(m, k, device=DEV, generator=g).bfloat16()
        ref = W.w4a16_gemm_ref(x, one(packed, scales)).float()
        row = {"shape": name, "M": m, "N": n, "K": k, "gemv": {}}
        row["bf16_us"] = _time_ms(lambda w_: torch.nn.functional.linear(x, w_), bsets) * 1e3
        cfgs = {"gemm": {"kernel": "gemm"}}
        cfgs |= {f"gemv_bm{bm}": {"kernel": "gemv", "BLOCK_M": bm} for bm in ROWS if bm <= m}
        for label, cfg in cfgs.items():
            try:
                y = W.w4a16_gemm(x, one(packed, scales), config=cfg).float()
                err = ((y - ref).norm() / ref.norm()).item()
                us = _time_ms(lambda p, s: W.w4a16_gemm(x, one(p, s), config=cfg), sets) * 1e3
            except Exception as e:
                print("fail", name, m, label, repr(e)[:300], flush=True)
                continue
            if label == "gemm":
                row.update(gemm_us=us, gemm_rel_err=err)
            else:
                row["gemv"][label] = {"us": us, "rel_err": err}
        cases.append(row)
        best = min(row["gemv"].items(), key=lambda kv: kv[1]["us"])
        print(
            f"{name:8} M{m:2} bf16 {row['bf16_us']:6.2f} gemm {row.get('gemm_us', 0):6.2f} "
            f"gemv best {best[0]} {best[1]['us']:6.2f} (err {best[1]['rel_err']:.1e}) [{time.time() - t0:.0f}s]",
            flush=True,
        )
    dump()
rows = []
for meth, most, bm in (
    (None, 1, 1),
    ("w4a16-g128", 1, 1),
    ("w4a16-g128", 16, 1),
    ("w4a16-g128", 16, 4),
    ("w4a16-g128", 16, 16),
):
    W.GEMV_MAX_ROWS, W.GEMV_BLOCK_M = most, bm
    for r in decode_rows(methods=(meth,), batches=ROWS, progress=False):
        r["gemv_max_rows"], r["gemv_block_m"] = most, bm
        rows.append(r)
        print(
            f"decode {r['method']:10} gemv<= {most:2} bm {bm:2} b{r['batch']:2} {r['tokens_per_s']:7.0f} "
            f"[{time.time() - t0:.0f}s]",
            flush=True,
        )
    dump(rows)
