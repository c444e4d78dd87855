# ruff: noqa
"""Batch-1 decode with the GEMV and PDL (the defaults) at three attention split targets
(TARGET_PROGRAMS 1024: 64 splits a KV head at batch 1, 256: 32... 64: one split and no merge
kernel), and a profile of the GEMV without PDL (kernel durations not stretched by waiting).
python3 docs/measurements/b1_splits_probe.py OUT  (about a minute on an H100)."""

import json, sys, tempfile, time
import torch, triton
import minirt.kernels.decode_attention as D
import minirt.kernels.pdl as P
from minirt import LLM
from minirt.bench.gpu import minirt_decode, profile_step
from minirt.bench.roofline import qwen3_06b_checkpoint

out, t0 = sys.argv[1], time.time()
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "decode": [],
    "profiles": [],
}
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    for target, pdl in ((1024, True), (256, True), (64, True), (8, True), (1024, False)):
        D.TARGET_PROGRAMS, P.ENABLED = target, pdl
        llm = LLM(folder, device="cuda", kv_cache_bytes=2 << 30, max_num_seqs=8)
        for rep in range(2):
            for b in (1, 2):
                r = minirt_decode(llm, b, graphs=True)
                r.update(target_programs=target, pdl=pdl, rep=rep)
                res["decode"].append(r)
                print(
                    f"target {target:5} pdl {pdl} b{b} rep{rep} {r['tokens_per_s']:7.0f} tok/s {r['step_ms']:.3f} ms [{time.time() - t0:.0f}s]",
                    flush=True,
                )
        if not pdl or target == 64:
            p = profile_step(llm, 1, graphs=True, top=16)
            p.update(target_programs=target, pdl=pdl)
            res["profiles"].append(p)
            print(
                f"profile target {target} pdl {pdl}: {p['num_kernel_launches'] / p['steps']:.0f} kernels/step, "
                f"{p['kernel_time_ms'] / p['steps'] * 1e3:.0f} us/step",
                flush=True,
            )
            for kk in p["kernels"][:12]:
                print(
                    f"   {kk['count'] / p['steps']:6.1f} {kk['cuda_us'] / p['steps']:7.1f} us  {kk['name'][:70]}"
                )
        del llm
        torch.cuda.empty_cache()
        json.dump(res, open(f"{out}/b1_splits.json", "w"), indent=1)
