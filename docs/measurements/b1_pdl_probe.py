# ruff: noqa
"""Batch-1 and -2 decode with the GEMV and PDL: a kernel releasing the next one after its wait
(the default) or before it (MINIRT_PDL_EARLY), and q/k-norm + RoPE + store in one program a
token or two (q; k and v). python3 docs/measurements/b1_pdl_probe.py OUT (a minute, H100)."""

import json, sys, tempfile, time
import torch, triton
import minirt.kernels.pdl as P
import minirt.kernels.qk_norm_rope as Q
from minirt import LLM
from minirt.bench.gpu import minirt_decode
from minirt.bench.roofline import qwen3_06b_checkpoint

out, t0 = sys.argv[1], time.time()
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "decode": [],
}
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    for early, parts in ((False, 1), (False, 2), (True, 1), (True, 2)):
        P.EARLY, Q.QK_PARTS = early, parts
        llm = LLM(folder, device="cuda", kv_cache_bytes=2 << 30, max_num_seqs=8)
        for rep in range(3):
            for b in (1, 2):
                r = minirt_decode(llm, b, graphs=True)
                r.update(early_release=early, qk_parts=parts, rep=rep)
                res["decode"].append(r)
                print(
                    f"early {early:d} qk_parts {parts} b{b} rep{rep} {r['tokens_per_s']:7.0f} tok/s {r['step_ms']:.3f} ms [{time.time() - t0:.0f}s]",
                    flush=True,
                )
        del llm
        torch.cuda.empty_cache()
        json.dump(res, open(f"{out}/b1_pdl.json", "w"), indent=1)
