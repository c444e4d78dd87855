# ruff: noqa
"""The bf16 decode GEMV (minirt.kernels.gemv) and programmatic dependent launch on an H100.
(1) each Qwen3-0.6B projection at 1-2 rows, weights from DRAM: cuBLAS vs the GEMV (us);
(2) decode tokens/s at batch 1, 2, 4 (bench gpu's method) for: before (cuBLAS, no PDL), PDL
alone, GEMV fused without PDL, GEMV fused with PDL, GEMV unfused with PDL, GEMV up to 2 rows;
(3) torch.profiler of a batch-1 graphed step before and after: kernels and kernel time a step;
(4) greedy tokens of each variant against "before".
python3 docs/measurements/gemv_pdl_probe.py OUT  (three to four minutes on an H100)."""

import json, sys, tempfile, time
from dataclasses import replace
import torch, triton
import minirt.kernels.gemv as G
import minirt.kernels.pdl as P
from minirt import LLM, SamplingParams
from minirt.bench.gpu import minirt_decode, profile_step, PROMPT_LEN, NEW_TOKENS
from minirt.bench.quant import _copies, _time_ms
from minirt.bench.roofline import ceilings, qwen3_06b_checkpoint
from minirt.kernels.backend import TRITON
from minirt.kv import kv_cache_bytes_per_token

out, t0 = sys.argv[1], time.time()
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "kernels": [],
    "decode": [],
    "profiles": [],
    "greedy": [],
}
dump = lambda: json.dump(res, open(f"{out}/gemv_pdl.json", "w"), indent=1)
copy = ceilings()[0]["gb_per_s"]
res["copy_gb_per_s"] = copy
print(f"copy {copy:.0f} GB/s", flush=True)

SHAPES = {"qkv": (4096, 1024), "o": (1024, 2048), "gate_up": (6144, 1024), "down": (1024, 3072)}
g = torch.Generator(device="cuda").manual_seed(0)
G.GEMV_MAX_ROWS = 4
for name, (n, k) in SHAPES.items():
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).bfloat16()
    sets = _copies(w)
    for m in (1, 2, 4):
        x = torch.randn(m, k, device="cuda", generator=g).bfloat16()
        ref = torch.nn.functional.linear(x.float(), w.float())
        err = ((G.linear(x, w).float() - ref).norm() / ref.norm()).item()
        row = {
            "shape": name,
            "M": m,
            "N": n,
            "K": k,
            "rel_err": err,
            "cublas_us": _time_ms(lambda w_: torch.nn.functional.linear(x, w_), sets) * 1e3,
            "gemv_us": _time_ms(lambda w_: G.linear(x, w_), sets) * 1e3,
        }
        P.ENABLED = False  # back to back in one graph: with PDL each overlaps the one before
        row["gemv_no_pdl_us"] = _time_ms(lambda w_: G.linear(x, w_), sets) * 1e3
        P.ENABLED = True
        row["gemv_gb_per_s"] = n * k * 2 / row["gemv_us"] / 1e3
        res["kernels"].append(row)
        print(
            f"{name:8} M{m} cublas {row['cublas_us']:6.2f} gemv {row['gemv_us']:6.2f} (no PDL {row['gemv_no_pdl_us']:6.2f}) us "
            f"({row['gemv_gb_per_s']:.0f} GB/s, err {err:.1e}) [{time.time() - t0:.0f}s]",
            flush=True,
        )
dump()

UNFUSED = replace(TRITON, silu_mul_linear=None, rms_norm_linear=None)
VARIANTS = [  # name, GEMV rows, PDL, backend
    ("before", 0, False, "triton"),
    ("pdl", 0, True, "triton"),
    ("gemv", 1, False, "triton"),
    ("gemv+pdl", 1, True, "triton"),
    ("gemv-unfused+pdl", 1, True, UNFUSED),
    ("gemv2+pdl", 2, True, "triton"),
    ("gemv4+pdl", 4, True, "triton"),
]
prompts = [[(7 * i + 3 * j) % 250 + 3 for j in range(40)] for i in range(4)]
params = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    tokens = {}
    for name, rows, pdl, backend in VARIANTS:
        G.GEMV_MAX_ROWS, P.ENABLED = rows, pdl
        try:
            llm = LLM(
                folder,
                device="cuda",
                kv_cache_bytes=2 << 30,
                kernel_backend=backend,
                max_num_seqs=8,
            )
            for b in (1, 2, 4):
                r = minirt_decode(llm, b, graphs=True)
                r["variant"] = name
                if b == 1:
                    weights = sum(p.numel() * p.element_size() for p in llm.model.parameters())
                    kv = (PROMPT_LEN + NEW_TOKENS / 2) * kv_cache_bytes_per_token(
                        llm.model_config, torch.bfloat16
                    )
                    r["floor_ms"] = (weights + kv) / (copy * 1e6)
                    r["fraction_of_floor"] = r["floor_ms"] / r["step_ms"]
                res["decode"].append(r)
                print(
                    f"decode {name:18} b{b} {r['tokens_per_s']:7.0f} tok/s  {r['step_ms']:.3f} ms"
                    + (f"  {r['fraction_of_floor']:.0%} of floor" if b == 1 else "")
                    + f" [{time.time() - t0:.0f}s]",
                    flush=True,
                )
            tokens[name] = [
                [o.token_ids for o in llm.generate(prompts[:b], params, use_tqdm=False)]
                for b in (1, 2, 4)
            ]
            if name in ("before", "gemv+pdl", "gemv-unfused+pdl"):
                p = profile_step(llm, 1, graphs=True, top=16)
                p["variant"] = name
                res["profiles"].append(p)
                print(
                    f"profile {name}: {p['num_kernel_launches'] / p['steps']:.0f} kernels/step, "
                    f"{p['kernel_time_ms'] / p['steps'] * 1e3:.0f} us kernel time/step",
                    flush=True,
                )
                for kk in p["kernels"][:10]:
                    print(
                        f"   {kk['count'] / p['steps']:6.1f} {kk['cuda_us'] / p['steps']:7.1f} us  {kk['name'][:70]}"
                    )
            del llm
            torch.cuda.empty_cache()
        except Exception as e:
            print("FAIL", name, repr(e)[:600], flush=True)
            res["decode"].append({"variant": name, "error": repr(e)[:600]})
        dump()
    for name, t in tokens.items():
        same = [sum(a == b for a, b in zip(x, y)) for x, y in zip(t, tokens["before"])]
        res["greedy"].append({"variant": name, "sequences_equal_to_before_b1_b2_b4": same})
        print("greedy", name, same, flush=True)
dump()
