# ruff: noqa
"""Decode at batch 1, 64 and 256 before and after one change, in one process, with the floor of
the same run: `before`, the decode attention and q/k-norm + RoPE + store modules of commit
366c52c (folder OLD) and the LM head on cuBLAS; `now`, this commit (the context lengths,
positions, cos/sin and slots read before each kernel's PDL wait; the LM head on minirt's GEMV).
python3 docs/measurements/decode_now_probe.py OUT OLD (two minutes, H100)."""

import dataclasses, importlib.util, json, sys, tempfile, time
import torch, triton
from minirt import LLM
from minirt.bench.gpu import ceilings, minirt_decode, roofline_rows
from minirt.bench.roofline import qwen3_06b_checkpoint
from minirt.kernels import gemv
from minirt.kernels.backend import TRITON
from minirt.kv import kv_cache_bytes_per_token

out, old, t0 = sys.argv[1], sys.argv[2], time.time()
modules = {}
for name in ("decode_attention", "qk_norm_rope"):
    spec = importlib.util.spec_from_file_location(f"old_{name}", f"{old}/{name}.py")
    modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(modules[name])
before = dataclasses.replace(
    TRITON, name="before", decode_attention=modules["decode_attention"].decode_attention,
    qk_norm_rope_store=modules["qk_norm_rope"].qk_norm_rope_store,
)  # fmt: skip
res = {
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "hbm_copy": ceilings()[0],
    "decode": [],
}
with tempfile.TemporaryDirectory() as folder:
    qwen3_06b_checkpoint(folder)
    kw = dict(device="cuda", kv_cache_bytes=12 << 30, max_num_seqs=256, piecewise_graph_sizes=[])
    llms = {"before": LLM(folder, kernel_backend=before, **kw), "now": LLM(folder, **kw)}
    llms["before"].model.lm_head.kernels = dataclasses.replace(TRITON, linear=gemv.linear_ref)
    llms["before"].capture_graphs()
    weight_bytes = sum(p.numel() * p.element_size() for p in llms["now"].model.parameters())
    kv_tok = kv_cache_bytes_per_token(llms["now"].model_config, torch.bfloat16)
    for rep in range(3):
        for k, llm in llms.items() if rep % 2 == 0 else reversed(llms.items()):
            for b in (1, 64, 256):
                r = minirt_decode(llm, b, graphs=True)
                roof = roofline_rows([r], weight_bytes, kv_tok, res["hbm_copy"]["gb_per_s"])[0]
                r.update(
                    variant=k,
                    rep=rep,
                    floor_ms=roof["floor_ms"],
                    fraction_of_floor=roof["fraction_of_floor"],
                )
                res["decode"].append(r)
                print(
                    f"{k:7s} b{b} rep{rep} {r['tokens_per_s']:7.0f} tok/s {r['step_ms']:.3f} ms "
                    f"{r['fraction_of_floor']:.3f} of the floor [{time.time() - t0:.0f}s]",
                    flush=True,
                )
json.dump(res, open(f"{out}/decode_now.json", "w"), indent=1)
