# ruff: noqa
"""Batch-1/2/8 decode with decode attention's merge kernel (`before`: the decode_attention.py of
commit 366c52c, passed as OLD), with the merge in the split kernel (`merge`), and with q/k-norm +
RoPE + K/V store in it too (`fused`, the default); kernels a step for each; and the LM head
(151,936 x 1,024) as cuBLAS's GEMV against minirt's, with the argmax after it.
python3 docs/measurements/b1_attention_probe.py OUT OLD (two minutes, H100). It ran on commit
577771b, where `merge` and `fused` existed; both were slower and were taken out after it."""

import dataclasses, importlib.util, json, sys, tempfile, time
import torch, triton
from minirt import LLM
from minirt.bench.gpu import minirt_decode, profile_step
from minirt.bench.roofline import qwen3_06b_checkpoint
from minirt.kernels import gemv
from minirt.kernels.backend import TRITON

out, old_path, t0 = sys.argv[1], sys.argv[2], time.time()
spec = importlib.util.spec_from_file_location("old_decode_attention", old_path)
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
variants = {
    "before": dataclasses.replace(TRITON, name="before", decode_attention=old.decode_attention),
    "merge": dataclasses.replace(TRITON, name="merge", decode_attention_qkv=None),
    "fused": TRITON,
}
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "decode": [],
    "profiles": [],
    "lm_head": [],
}
x = torch.randn(1, 1024, device="cuda", dtype=torch.bfloat16)
w = torch.randn(151936, 1024, device="cuda", dtype=torch.bfloat16) * 0.02
for name, fn in (("cublas", torch.nn.functional.linear), ("gemv", gemv.linear)):
    us = triton.testing.do_bench_cudagraph(lambda: fn(x, w), rep=200) * 1e3
    us_argmax = triton.testing.do_bench_cudagraph(lambda: fn(x, w).argmax(-1), rep=200) * 1e3
    gbps = w.numel() * 2 / us / 1e3
    res["lm_head"].append({"kernel": name, "us": us, "us_with_argmax": us_argmax, "gb_per_s": gbps})
    print(
        f"lm head {name}: {us:.1f} us ({gbps:.0f} GB/s), with argmax {us_argmax:.1f} us", flush=True
    )
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    llms = {
        k: LLM(folder, device="cuda", kv_cache_bytes=2 << 30, max_num_seqs=8, kernel_backend=b)
        for k, b in variants.items()
    }
    for rep in range(3):
        for k, llm in llms.items():
            for b in (1, 2, 8):
                r = minirt_decode(llm, b, graphs=True)
                r.update(variant=k, rep=rep)
                res["decode"].append(r)
                print(
                    f"{k:7s} b{b} rep{rep} {r['tokens_per_s']:7.0f} tok/s {r['step_ms']:.3f} ms [{time.time() - t0:.0f}s]",
                    flush=True,
                )
    for k, llm in llms.items():
        p = profile_step(llm, 1, graphs=True, top=20)
        p["variant"] = k
        res["profiles"].append(p)
        print(k, "kernels/step", p["num_kernel_launches"] / 10, flush=True)
json.dump(res, open(f"{out}/b1_attention.json", "w"), indent=1)
