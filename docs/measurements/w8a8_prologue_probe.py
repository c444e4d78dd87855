# ruff: noqa
"""The 8-bit GEMV with its input's prologue inside, at batches 1 and 2, against bf16 and against
the separate kernels, in one process. `*-separate`: the RMSNorm (with the residual add) and
SiLU·mul as kernels of their own, then the W8A8 GEMV that finds each row's scale in a pass over
x (minirt.kernels.scaled_gemm); `*-fused`: one kernel, the bf16 GEMV's prologue then the row's
scale and codes from its registers (minirt.kernels.gemv.scaled_linear), with TILE_8BIT codes a
program (16384: the bf16 GEMV's program count; 32768: its bytes).
python3 docs/measurements/w8a8_prologue_probe.py OUT [BATCHES] (three minutes, H100)."""

import json, sys, tempfile, time
import torch, triton
from minirt import LLM
from minirt.bench.gpu import ceilings, minirt_decode
from minirt.bench.roofline import qwen3_06b_checkpoint
from minirt.kernels import gemv
from minirt.model import layers

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
codes_of, tile = layers.w8a8_codes, gemv.TILE_8BIT
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    kw = dict(device="cuda", kv_cache_bytes=3 << 30, max_num_seqs=8, piecewise_graph_sizes=[])
    llms = {"bf16": LLM(folder, **kw)}
    for method in ("fp8-dynamic", "int8"):
        variants = {"separate": (lambda *a: None, tile), "fused": (codes_of, 16384)}
        if method == "fp8-dynamic":
            variants["fused-32k"] = (codes_of, 32768)
        for name, (codes, t) in variants.items():
            layers.w8a8_codes, gemv.TILE_8BIT = codes, t  # captured so: the graphs keep it
            llms[f"{method}-{name}"] = LLM(folder, quantization=method, **kw)
    layers.w8a8_codes, gemv.TILE_8BIT = codes_of, tile
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
