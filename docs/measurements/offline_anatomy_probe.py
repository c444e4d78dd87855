# ruff: noqa  (the probe as it ran on the device, kept as the record of the measurement)
"""Where the offline workload's time goes, and the batch-256 step's kernels.

`offline_anatomy_probe.py TAG OUT` in one process:
  - decode steps at batch 64 and 256 (graphs, bench gpu's rows) against their floor;
  - the 256-request offline workload (cold passes) with a CUDA event before every step: each
    step's GPU time is the time to the next step's event (the loop is GPU-bound), grouped into
    decode-only steps by batch and steps that carry prompt tokens, each beside its floor
    (weights + the KV its rows read, at the copy rate);
  - with PROFILE=1: torch.profiler over 12 decode steps at batch 64 and 256 (context ~400), a
    kernel table (run it with MINIRT_PDL=0 for kernel times that are work, not early starts).
TAG "old...": the step before (cuBLAS LM head and torch's argmax past two rows, silu_mul without
PDL); "nohead...": only the head as before; anything else: the code as it is.
"""

import json, os, sys, time, tempfile
import torch

tag, out = sys.argv[1], sys.argv[2]
if tag.startswith("old"):
    import minirt.kernels.activation as act

    act.launch_args = lambda t: {"PDL": 0}
import minirt.kernels.lm_head as lm_head

lm_head.MAX_ROWS = 0 if tag.startswith(("old", "nohead")) else 256

from minirt import LLM, SamplingParams
from minirt.bench.roofline import qwen3_06b_checkpoint, ceilings
from minirt.bench.gpu import _wall, minirt_decode, roofline_rows
from minirt.engine.model_runner import ModelRunner
from minirt.kv import kv_cache_bytes_per_token
from minirt.workload import uniform

copy = ceilings()[0]["gb_per_s"] * 1e9
res = {
    "tag": tag,
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "pdl": os.environ.get("MINIRT_PDL", "1"),
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    "copy_gb_per_s": copy / 1e9,
}
log = []
orig = ModelRunner.launch


def launch(self, batch, prev):
    ev = torch.cuda.Event(enable_timing=True)
    ev.record()
    t = time.perf_counter()
    out_ = orig(self, batch, prev)
    ctx = sum(s.num_computed_tokens + n for s, n in zip(batch.seqs, batch.num_new_tokens))
    log.append((ev, len(batch.seqs), batch.num_prefill_tokens, ctx, time.perf_counter() - t))
    return out_


def bucket(n):
    for hi in (1, 2, 8, 32, 64, 128, 192, 256):
        if n <= hi:
            return hi
    return 9999


work = uniform(num_requests=256, lo=100, hi=1024, seed=0)
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    llm = LLM(folder, device="cuda", gpu_memory_utilization=0.6, max_num_batched_tokens=8192)
    wb = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    kvt = kv_cache_bytes_per_token(llm.model_config, torch.bfloat16)
    if os.environ.get("PROFILE") != "1":
        res["decode"] = [minirt_decode(llm, b, graphs=True) for b in (64, 256)]
        res["roofline"] = roofline_rows(res["decode"], wb, kvt, copy / 1e9)
        for f in res["roofline"]:
            print(
                tag,
                "decode",
                f["batch"],
                round(f["step_ms"], 4),
                "floor",
                round(f["fraction_of_floor"], 4),
                flush=True,
            )
        ModelRunner.launch = launch
        res["offline"] = []
        for i in range(int(os.environ.get("PASSES", 1))):
            llm.block_manager.evict()
            log.clear()
            secs = _wall(lambda: llm.generate(work.prompts, work.params, use_tqdm=False))
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            torch.cuda.synchronize()
            groups = {}
            for j, (ev, n, pre, ctx, host) in enumerate(log):
                nxt = log[j + 1][0] if j + 1 < len(log) else end
                ms = ev.elapsed_time(nxt)
                key = f"prompt" if pre else f"decode<={bucket(n)}"
                g = groups.setdefault(
                    key,
                    {
                        "steps": 0,
                        "ms": 0.0,
                        "floor_ms": 0.0,
                        "host_ms": 0.0,
                        "prompt_tokens": 0,
                        "rows": 0,
                    },
                )
                g["steps"] += 1
                g["ms"] += ms
                g["floor_ms"] += (wb + ctx * kvt) / copy * 1e3
                g["host_ms"] += host * 1e3
                g["prompt_tokens"] += pre
                g["rows"] += n
            gpu = sum(g["ms"] for g in groups.values())
            row = {
                "seconds": secs,
                "output_tokens_per_s": sum(work.output_lens) / secs,
                "steps": len(log),
                "gpu_s_between_events": gpu / 1e3,
                "cached": llm.last_stats.num_cached_tokens,
                "groups": groups,
            }
            res["offline"].append(row)
            print(
                tag,
                "offline",
                round(row["output_tokens_per_s"]),
                "steps",
                len(log),
                "event-sum",
                round(gpu / 1e3, 3),
                "wall",
                round(secs, 3),
                flush=True,
            )
            if i == 0:
                for k in sorted(groups):
                    g = groups[k]
                    print(
                        f"  {k:12s} steps {g['steps']:5d} ms {g['ms']:8.1f} floor {g['floor_ms']:8.1f}"
                        f" ({g['floor_ms'] / g['ms']:.2f}) host {g['host_ms']:7.1f} prompt {g['prompt_tokens']}",
                        flush=True,
                    )
        ModelRunner.launch = orig
    else:
        from torch.profiler import ProfilerActivity, profile

        res["profiles"] = []
        for b in (256, 64):
            prompts = torch.randint(0, 256, (b, 384), generator=torch.Generator().manual_seed(3))
            p = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
            llm.generate(prompts.tolist(), p, use_tqdm=False)
            llm.block_manager.evict()
            prof = profile(activities=[ProfilerActivity.CUDA])
            count = [0]

            def launch2(self, batch, prev):
                if batch.num_prefill_tokens == 0:
                    count[0] += 1
                    if count[0] == 3:
                        torch.cuda.synchronize()
                        prof.start()
                return orig(self, batch, prev)

            ModelRunner.launch = launch2
            llm.generate(prompts.tolist(), p, use_tqdm=False)
            torch.cuda.synchronize()
            prof.stop()
            ModelRunner.launch = orig
            llm.block_manager.evict()
            steps = count[0] - 2
            ks = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
            ks.sort(key=lambda e: -e.device_time_total)
            total = sum(e.device_time_total for e in ks)
            table = [
                {
                    "name": e.key[:100],
                    "per_step": e.count / steps,
                    "us_per_step": e.device_time_total / steps,
                }
                for e in ks[:30]
            ]
            res["profiles"].append(
                {"batch": b, "steps": steps, "kernel_us_per_step": total / steps, "kernels": table}
            )
            print(tag, "profile batch", b, "kernel us/step", round(total / steps, 1), flush=True)
            for t in table[:22]:
                print(
                    f"   {t['us_per_step']:8.1f} us  x{t['per_step']:5.1f}  {t['name'][:70]}",
                    flush=True,
                )
json.dump(res, open(os.path.join(out, f"anatomy-{tag}-pdl{res['pdl']}.json"), "w"), indent=1)
