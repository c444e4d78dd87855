# ruff: noqa
"""Decode at batch 1, 64 and 256 before and after, in one process, with the floor of the same
run: `before`, the decode attention and q/k-norm + RoPE + store modules of commit 366c52c
(folder OLD), the LM head on cuBLAS and the placeholders resolved by PyTorch's operators; `now`,
this commit (the context lengths, positions, cos/sin and slots read before each kernel's PDL
wait; the LM head on minirt's GEMV; the placeholders resolved by one kernel, in place); and at
batch 1 `now-torch-resolve`, this commit with PyTorch's resolve.
python3 docs/measurements/decode_now_probe.py OUT OLD (two minutes, H100)."""

import dataclasses, importlib.util, json, sys, tempfile, time, types
import torch, triton
from minirt import LLM
from minirt.bench.gpu import ceilings, minirt_decode, roofline_rows
from minirt.bench.roofline import qwen3_06b_checkpoint
from minirt.engine import model_runner
from minirt.kernels import gemv, placeholders
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
    torch_resolve = types.SimpleNamespace(resolve=placeholders.resolve_ref)
    runs = [("before", 1), ("before", 64), ("before", 256), ("now", 1), ("now", 64), ("now", 256),
            ("now-torch-resolve", 1)]  # fmt: skip
    for rep in range(2):
        for k, b in runs if rep % 2 == 0 else reversed(runs):
            model_runner.placeholders = placeholders if k == "now" else torch_resolve
            r = minirt_decode(llms[k.removesuffix("-torch-resolve")], b, graphs=True)
            roof = roofline_rows([r], weight_bytes, kv_tok, res["hbm_copy"]["gb_per_s"])[0]
            r.update(variant=k, rep=rep, floor_ms=roof["floor_ms"],
                     fraction_of_floor=roof["fraction_of_floor"])  # fmt: skip
            res["decode"].append(r)
            print(f"{k:7s} b{b} rep{rep} {r['tokens_per_s']:7.0f} tok/s {r['step_ms']:.3f} ms "
                  f"{r['fraction_of_floor']:.3f} of the floor [{time.time() - t0:.0f}s]", flush=True)  # fmt: skip
json.dump(res, open(f"{out}/decode_now.json", "w"), indent=1)
