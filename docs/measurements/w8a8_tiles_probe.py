# ruff: noqa
"""The 8-bit decode GEMV's tiles end to end: FP8 (fp8-dynamic) and INT8 decode at batch 1 (and
2) with TILE_8BIT codes a program, WARPS_8BIT warps and at most MAX_BLOCK_N rows of W a program
(minirt.kernels.gemv; 16 caps qkv and gate_up, K = 1,024, at 16 rows whatever the tile), each
beside bf16 in one process, CUDA graphs.
python3 docs/measurements/w8a8_tiles_probe.py OUT [BATCHES] (three minutes, H100)."""

import json, sys, tempfile, time
import torch, triton
from minirt import LLM
from minirt.bench.gpu import minirt_decode
from minirt.bench.roofline import qwen3_06b_checkpoint
from minirt.kernels import gemv

out, t0 = sys.argv[1], time.time()
BATCHES = [int(b) for b in sys.argv[2:]] or [1]
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "decode": [],
}
TILES = [(32768, 8, 16), (32768, 4, 16), (32768, 16, 16), (16384, 4, 16), (32768, 8, 32),
         (65536, 8, 32), (65536, 16, 32)]  # fmt: skip
default = (gemv.TILE_8BIT, gemv.WARPS_8BIT, gemv.MAX_BLOCK_N)
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    kw = dict(device="cuda", kv_cache_bytes=1 << 30, max_num_seqs=4, piecewise_graph_sizes=[])
    llms = {"bf16": LLM(folder, **kw)}
    for method in ("fp8-dynamic", "int8"):
        for tile, warps, rows in TILES:
            # captured so: the graphs keep it
            gemv.TILE_8BIT, gemv.WARPS_8BIT, gemv.MAX_BLOCK_N = tile, warps, rows
            name = f"{method}-{tile // 1024}k-{warps}w-{rows}r"
            llms[name] = LLM(folder, quantization=method, **kw)
    gemv.TILE_8BIT, gemv.WARPS_8BIT, gemv.MAX_BLOCK_N = default
    runs = [(k, b) for k in llms for b in BATCHES]
    for rep in range(2):
        for k, b in runs if rep % 2 == 0 else reversed(runs):
            r = minirt_decode(llms[k], b, graphs=True)
            r.update(variant=k, rep=rep)
            res["decode"].append(r)
            json.dump(res, open(f"{out}/w8a8_tiles.json", "w"), indent=1)  # kept if cut short
            print(
                f"{k:22s} b{b} rep{rep} {r['tokens_per_s']:7.0f} tok/s {r['step_ms']:.3f} ms "
                f"[{time.time() - t0:.0f}s]",
                flush=True,
            )
json.dump(res, open(f"{out}/w8a8_tiles.json", "w"), indent=1)
