# ruff: noqa
"""The 8-bit GEMV with its input's prologue inside, at batches 1 and 2, against bf16 and against
the separate kernels, in one process. `*-separate`: the RMSNorm (with the residual add) and
SiLU·mul as kernels of their own, then the W8A8 GEMV that finds each row's scale in a pass over
x (minirt.kernels.scaled_gemm); `*-fused-16k`: one kernel for the norm or SiLU·mul and the
product, the bf16 GEMV's prologue then the row's scale and codes from its registers
(minirt.kernels.gemv.scaled_linear), 16384 codes a program (the bf16 GEMV's program count), the
o projection still on scaled_gemm's GEMV; `*-fused-o-16k`: the o projection on scaled_linear
too; `*-now`: that, 32768 codes a program (the bf16 GEMV's bytes): the engine's default.
(The first run, w8a8-prologue-h100-20261207.json's `run1`, called these separate, fused,
fused-o, and had fused-32k: the fusions with 32768 codes, o on scaled_gemm.)
python3 docs/measurements/w8a8_prologue_probe.py OUT [BATCHES] (three minutes, H100)."""

import json, sys, tempfile, time
import torch, triton
from minirt import LLM
from minirt.bench.gpu import ceilings, minirt_decode
from minirt.bench.roofline import qwen3_06b_checkpoint
from minirt.kernels import gemv
from minirt.model import layers
from minirt.quant.linear import QuantLinear

gemv_codes = QuantLinear.gemv_codes


def fusions_only(linear, x):  # the norm and SiLU·mul fusions; the o projection as before
    codes = gemv_codes(linear) if isinstance(linear, QuantLinear) else None
    return codes if codes is not None and gemv.use_scaled_gemv(x, codes[0]) else None


VARIANTS = {  # name: (layers.w8a8_codes, QuantLinear.gemv_codes, TILE_8BIT)
    "separate": (lambda *a: None, lambda self: None, 16384),
    "fused-16k": (fusions_only, lambda self: None, 16384),
    "fused-o-16k": (layers.w8a8_codes, gemv_codes, 16384),
    "now": (layers.w8a8_codes, gemv_codes, 32768),
}

out, t0 = sys.argv[1], time.time()
BATCHES = [int(b) for b in sys.argv[2:]] or [1, 2]
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "hbm_copy": ceilings()[0],
    "decode": [],
}
default = (layers.w8a8_codes, gemv_codes, gemv.TILE_8BIT)
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    kw = dict(device="cuda", kv_cache_bytes=3 << 30, max_num_seqs=8, piecewise_graph_sizes=[])
    llms = {"bf16": LLM(folder, **kw)}
    for method in ("fp8-dynamic", "int8"):
        for name in VARIANTS if method == "fp8-dynamic" else ("separate", "now"):
            # captured so: the graphs keep it
            layers.w8a8_codes, QuantLinear.gemv_codes, gemv.TILE_8BIT = VARIANTS[name]
            llms[f"{method}-{name}"] = LLM(folder, quantization=method, **kw)
    layers.w8a8_codes, QuantLinear.gemv_codes, gemv.TILE_8BIT = default
    runs = [(k, b) for k in llms for b in BATCHES]
    for rep in range(2):
        for k, b in runs if rep % 2 == 0 else reversed(runs):
            r = minirt_decode(llms[k], b, graphs=True)
            r.update(variant=k, rep=rep)
            res["decode"].append(r)
            json.dump(res, open(f"{out}/w8a8_prologue.json", "w"), indent=1)  # kept if cut short
            print(
                f"{k:22s} b{b} rep{rep} {r['tokens_per_s']:7.0f} tok/s {r['step_ms']:.3f} ms "
                f"[{time.time() - t0:.0f}s]",
                flush=True,
            )
json.dump(res, open(f"{out}/w8a8_prologue.json", "w"), indent=1)
