# ruff: noqa  (the probe as it ran on the device, kept as the record of the measurement)
"""The LM head with the argmax on the tensor cores (and silu_mul launched with PDL) against the
step before, in ONE process: two engines on one GPU, graphs captured once each, decode rows
(bench gpu's minirt_decode) at 16 / 64 / 256 rows measured A B A B A B, so drift and the
machine's mood hit both alike.

`head_ab_probe.py OUT` (env BATCHES="16,64,256", REPS=3). A ("old"): lm_head.MAX_ROWS = 0 (cuBLAS + torch.argmax past two rows)
and silu_mul without PDL. B ("new"): MAX_ROWS = 256 and silu_mul as committed.
"""

import json, os, sys, time, tempfile
import torch

import minirt.kernels.activation as act
import minirt.kernels.lm_head as lm_head
from minirt import LLM
from minirt.bench.gpu import minirt_decode, roofline_rows
from minirt.bench.roofline import ceilings, qwen3_06b_checkpoint
from minirt.kernels.pdl import launch_args
from minirt.kv import kv_cache_bytes_per_token

out = sys.argv[1]
BATCHES = [int(b) for b in os.environ.get("BATCHES", "16,64,256").split(",")]
REPS = int(os.environ.get("REPS", 3))
copy = ceilings()[0]["gb_per_s"]
variants = {"old": (0, lambda t: {"PDL": 0}), "new": (256, launch_args)}
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    "copy_gb_per_s": copy,
    "rows": [],
}


def use(name):
    lm_head.MAX_ROWS, act.launch_args = variants[name]


with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    llms = {}
    for name in variants:
        use(name)
        llms[name] = LLM(folder, device="cuda", gpu_memory_utilization=0.35)
    llm = llms["old"]
    wb = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    kvt = kv_cache_bytes_per_token(llm.model_config, torch.bfloat16)
    for rep in range(REPS):
        for name in variants:
            use(name)
            rows = [minirt_decode(llms[name], b, graphs=True) for b in BATCHES]
            for r in roofline_rows(rows, wb, kvt, copy):
                r.update(variant=name, rep=rep)
                res["rows"].append(r)
                print(
                    name,
                    rep,
                    r["batch"],
                    round(r["step_ms"], 4),
                    round(r["fraction_of_floor"], 4),
                    flush=True,
                )
summary = {}
for b in BATCHES:
    for name in variants:
        ms = sorted(r["step_ms"] for r in res["rows"] if r["batch"] == b and r["variant"] == name)
        summary[f"{name}@{b}"] = ms[len(ms) // 2]
    print(
        "batch",
        b,
        "median step ms old",
        round(summary[f"old@{b}"], 4),
        "new",
        round(summary[f"new@{b}"], 4),
        "new/old",
        round(summary[f"new@{b}"] / summary[f"old@{b}"], 4),
    )
res["median_step_ms"] = summary
json.dump(res, open(os.path.join(out, "head-ab.json"), "w"), indent=1)
