# ruff: noqa  (the probe as it ran on the device, kept as the record of the measurement)
"""Decode steps (b1, b64, b256, graphs) against the floor and the offline workload (cold passes)
with decode attention's tiles as committed ("new") or the earlier fixed 32-token tiles ("old")."""

import json, os, sys, time
import torch
import minirt.kernels.decode_attention as da
from minirt import LLM
from minirt.bench.roofline import qwen3_06b_checkpoint, ceilings
from minirt.bench.gpu import minirt_decode, roofline_rows, _wall
from minirt.kv import kv_cache_bytes_per_token
from minirt.workload import uniform
import tempfile

tag = sys.argv[1]
if tag.startswith("old"):
    da.default_tiles = lambda splits: (32, 2)
if os.environ.get("TILE_MAX_SPLITS"):
    _max, _bn, _st = (
        int(os.environ["TILE_MAX_SPLITS"]),
        int(os.environ.get("BN", 128)),
        int(os.environ.get("STAGES", 3)),
    )
    da.default_tiles = lambda splits: (_bn, _st) if splits <= _max else (32, 2)
if os.environ.get("OLD_LOGITS"):
    from minirt.model.decoder import CausalLM

    CausalLM.compute_logits = lambda self, hidden, fp32=True: self.lm_head(hidden).float()
if os.environ.get("TP"):
    da.TARGET_PROGRAMS = int(os.environ["TP"])
copy = ceilings()[0]["gb_per_s"]
res = {
    "tag": tag,
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "copy_gb_per_s": copy,
    "env": {k: os.environ.get(k) for k in ("TILE_MAX_SPLITS", "BN", "STAGES", "TP", "OLD_LOGITS")},
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
}
work = uniform(num_requests=256, lo=100, hi=1024, seed=0)
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    llm = LLM(folder, device="cuda", gpu_memory_utilization=0.6, max_num_batched_tokens=8192)
    res["decode"] = [minirt_decode(llm, b, graphs=True) for b in (1, 64, 256)]
    wb = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    res["roofline"] = roofline_rows(
        res["decode"], wb, kv_cache_bytes_per_token(llm.model_config, torch.bfloat16), copy
    )
    for r, f in zip(res["decode"], res["roofline"]):
        print(
            tag,
            "decode",
            r["batch"],
            round(r["step_ms"], 4),
            "floor",
            round(f["fraction_of_floor"], 3),
            flush=True,
        )
    passes = []
    for i in range(2):
        llm.block_manager.evict()
        t0 = time.time()
        secs = _wall(lambda: llm.generate(work.prompts, work.params, use_tqdm=False))
        passes.append(
            {
                "start_unix": t0,
                "seconds": secs,
                "output_tokens_per_s": sum(work.output_lens) / secs,
                "cached_prompt_tokens": llm.last_stats.num_cached_tokens,
                "num_preemptions": llm.last_stats.num_preemptions,
            }
        )
        print(
            tag,
            "offline",
            round(passes[-1]["output_tokens_per_s"]),
            passes[-1]["cached_prompt_tokens"],
            passes[-1]["num_preemptions"],
            flush=True,
        )
    res["offline"] = passes
json.dump(res, open(os.environ["OUT"] + f"/ab-{tag}.json", "w"), indent=1)
