# ruff: noqa
"""Batch-1 and -64 decode, one change at a time, all in one process: `before`, the decode attention
and q/k-norm + RoPE + store modules of commit 366c52c (folder OLD): the step's inputs read after
each kernel's PDL wait; `ctx`: the context lengths, positions, cos/sin and slots read before it
(folder CTX); `table`: the first tile's block-table entries too (this commit's modules); these
three with the LM head on cuBLAS; `head`: the LM head on minirt's GEMV too (the default).
Kernels a step for each. python3 docs/measurements/b1_prewait_probe.py OUT OLD CTX (two
minutes, H100)."""

import dataclasses, importlib.util, json, sys, tempfile, time
import torch, triton
from minirt import LLM
from minirt.bench.gpu import ceilings, minirt_decode, profile_step, roofline_rows
from minirt.kv import kv_cache_bytes_per_token
from minirt.bench.roofline import qwen3_06b_checkpoint
from minirt.kernels import gemv
from minirt.kernels.backend import TRITON

out, t0 = sys.argv[1], time.time()


def load(folder, name):
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", f"{folder}/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


variants = {}
for name, folder in (("before", sys.argv[2]), ("ctx", sys.argv[3])):
    da, qk = load(folder, "decode_attention"), load(folder, "qk_norm_rope")
    variants[name] = dataclasses.replace(
        TRITON, name=name, decode_attention=da.decode_attention,
        qk_norm_rope_store=qk.qk_norm_rope_store,
    )  # fmt: skip
variants.update(table=TRITON, head=TRITON)
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "decode": [],
    "profiles": [],
}
copy = ceilings()[0]
res["hbm_copy"] = copy
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    llms = {
        k: LLM(
            folder,
            device="cuda",
            kv_cache_bytes=2 << 30,
            max_num_seqs=64,
            kernel_backend=b,
            piecewise_graph_sizes=[],
        )
        for k, b in variants.items()
    }
    for k in ("before", "ctx", "table"):  # the LM head on cuBLAS (the backend's linear_ref), again
        llms[k].model.lm_head.kernels = dataclasses.replace(TRITON, linear=gemv.linear_ref)
        llms[k].capture_graphs()
    for rep in range(3):
        for k, llm in llms.items() if rep % 2 == 0 else reversed(llms.items()):
            for b in (1, 64):
                r = minirt_decode(llm, b, graphs=True)
                r.update(variant=k, rep=rep)
                res["decode"].append(r)
                print(
                    f"{k:7s} b{b} rep{rep} {r['tokens_per_s']:7.0f} tok/s {r['step_ms']:.3f} ms [{time.time() - t0:.0f}s]",
                    flush=True,
                )
    llm = llms["head"]
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    kv_tok = kv_cache_bytes_per_token(llm.model_config, torch.bfloat16)
    for r in roofline_rows(res["decode"], weight_bytes, kv_tok, copy["gb_per_s"]):
        res.setdefault("roofline", []).append(r)
    for k in llms:
        for r in res["decode"]:
            if r["variant"] == k and r["batch"] == 1:
                floor = roofline_rows([r], weight_bytes, kv_tok, copy["gb_per_s"])[0]["floor_ms"]
                r["fraction_of_floor"] = floor / r["step_ms"]
                print(k, r["rep"], f"{r['fraction_of_floor']:.3f} of the floor", flush=True)
    for k, llm in llms.items():  # the batch-1 graph alone, replayed back to back
        graph = llm.runner.graphs.graphs[1]
        graph.replay()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(200):
            graph.replay()
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end) / 200
        res.setdefault("replay_only", []).append({"variant": k, "batch": 1, "ms": ms})
        print(k, f"replay alone {ms:.3f} ms", flush=True)
    for k, llm in llms.items():
        p = profile_step(llm, 1, graphs=True, top=20)
        p["variant"] = k
        res["profiles"].append(p)
        print(k, "kernels/step", p["num_kernel_launches"] / p["steps"], flush=True)
json.dump(res, open(f"{out}/b1_prewait.json", "w"), indent=1)
