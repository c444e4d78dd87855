"""The minirt rows of `bench gpu` (decode at several batches with CUDA graphs, eager decode at
batch 1 and 64, the 256-request offline run) for whichever minirt is on PYTHONPATH."""

import json
import tempfile
import time

import minirt
from minirt import LLM
from minirt.bench import gpu
from minirt.bench.roofline import qwen3_06b_checkpoint

try:
    from minirt.workload import uniform

    work = uniform(num_requests=256, lo=100, hi=1024, seed=0)
except ImportError:
    work = gpu.offline_workload(256, 100, 1024, 0)
rows = []
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    t = time.perf_counter()
    llm = LLM(folder, device="cuda", gpu_memory_utilization=0.6, max_num_batched_tokens=8192)
    rows.append({"name": "startup_s", "value": time.perf_counter() - t})
    for bs in (1, 8, 64, 256):
        rows.append(gpu.minirt_decode(llm, bs, graphs=True))
    for bs in (1, 64):
        rows.append(gpu.minirt_decode(llm, bs, graphs=False))
    rows.append(gpu.minirt_offline(llm, work))
print(json.dumps({"minirt": minirt.__file__, "rows": rows}))
