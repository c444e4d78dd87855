"""The probe behind decode-splits-h100-20261206.json (run on the device from a copied tree).

`python decode_splits_probe.py TAG [TARGET_PROGRAMS]`: decode steps at batch 1, 64 and 256 (CUDA
graphs) against the weight + KV floor, the batch-1 kernel profile, and the offline workload three
times, the prefix cache emptied before each pass. One engine per process (a second one does not
fit beside the first at gpu_memory_utilization=0.6). TARGET_PROGRAMS 0 (or absent) leaves the
module as it is: the tree before the change has no such constant.
"""

import json
import os
import sys
import tempfile

import torch

import minirt.kernels.decode_attention as da
from minirt import LLM
from minirt.bench.gpu import _wall, minirt_decode, profile_step, roofline_rows
from minirt.bench.roofline import ceilings, qwen3_06b_checkpoint
from minirt.kv import kv_cache_bytes_per_token
from minirt.workload import uniform


def main(tag: str, target_programs: int) -> dict:
    if target_programs:
        da.TARGET_PROGRAMS = target_programs
    copy = ceilings()[0]["gb_per_s"]
    work = uniform(num_requests=256, lo=100, hi=1024, seed=0)
    row = {"tag": tag, "target_programs": target_programs or None, "copy_gb_per_s": copy}
    with tempfile.TemporaryDirectory() as folder:
        qwen3_06b_checkpoint(folder)
        llm = LLM(folder, device="cuda", gpu_memory_utilization=0.6, max_num_batched_tokens=8192)
        row["decode"] = [minirt_decode(llm, b, graphs=True) for b in (1, 64, 256)]
        weights = sum(p.numel() * p.element_size() for p in llm.model.parameters())
        kv = kv_cache_bytes_per_token(llm.model_config, torch.bfloat16)
        row["roofline"] = roofline_rows(row["decode"], weights, kv, copy)
        prof = profile_step(llm, 1, graphs=True)
        row["profile_b1"] = {k: prof[k] for k in ("num_kernel_launches", "kernel_time_ms")}
        row["offline"] = []
        for _ in range(3):
            llm.block_manager.evict()  # the same prompts would otherwise skip their prefill
            secs = _wall(lambda: llm.generate(work.prompts, work.params, use_tqdm=False))
            cached = llm.last_stats.num_cached_tokens  # 0: every pass prefilled every prompt
            rate = sum(work.output_lens) / secs
            row["offline"].append(
                {"seconds": secs, "output_tokens_per_s": rate, "cached_prompt_tokens": cached}
            )
    return row


if __name__ == "__main__":
    result = main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    for r, f in zip(result["decode"], result["roofline"], strict=True):
        print(result["tag"], r["batch"], f"{r['step_ms']:.4f} ms", f"{f['fraction_of_floor']:.3f}")
    print(result["tag"], [round(p["output_tokens_per_s"]) for p in result["offline"]])
    with open(os.path.join(os.environ.get("OUT", "."), f"decode-{result['tag']}.json"), "w") as f:
        json.dump(result, f, indent=1)
