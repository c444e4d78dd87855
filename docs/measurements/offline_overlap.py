"""Offline 256 requests U[100, 1024] (bench gpu's workload) with and without the overlapped loop."""

import json
import tempfile
import time

import torch

from minirt import LLM
from minirt.bench.roofline import qwen3_06b_checkpoint
from minirt.workload import uniform

work = uniform(num_requests=256, lo=100, hi=1024, seed=0)
out = []
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    for overlap in (False, True):
        llm = LLM(
            folder,
            device="cuda",
            gpu_memory_utilization=0.6,
            max_num_batched_tokens=8192,
            overlap_schedule=overlap,
        )
        llm.generate(work.prompts[:32], work.params[:32], use_tqdm=False)  # warm-up
        for _ in range(2):
            llm.block_manager.evict()
            torch.cuda.synchronize()
            t = time.perf_counter()
            res = llm.generate(work.prompts, work.params, use_tqdm=False)
            torch.cuda.synchronize()
            secs = time.perf_counter() - t
            toks = sum(len(r.token_ids) for r in res)
            out.append(
                {
                    "overlap_schedule": overlap,
                    "seconds": secs,
                    "output_tokens": toks,
                    "output_tokens_per_s": toks / secs,
                }
            )
            print(out[-1], flush=True)
        del llm
        torch.cuda.empty_cache()
print(json.dumps(out))
