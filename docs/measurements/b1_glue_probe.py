# ruff: noqa
"""A decode step's work outside the model, before and after, in one process with the floor of
the same run. `before`: the step's inputs in two copies (ids/positions/slots/contexts, then the
block tables through PyTorch's strided copy) and the placeholders resolved by their own kernel,
the argmax by torch after the replay (the previous commit's DecodeGraphs.run, below); `now`: one
copy and one launch that resolves the ids and spreads the table rows, the argmax inside the LM
head's GEMV and one small kernel, in the graph. Then FP8 W8A8 (`fp8-dynamic`) and W4A16 (`w4a16-g128`) at batch 1 with their GEMVs launched
plainly (`*-plain`) and with programmatic dependent launch, the first weight tile read before
the wait (`*-pdl`).
python3 docs/measurements/b1_glue_probe.py OUT [BATCHES] (two minutes, H100)."""

import bisect, json, sys, tempfile, time
import torch, triton
from minirt import LLM
from minirt.bench.gpu import ceilings, minirt_decode, roofline_rows
from minirt.bench.roofline import qwen3_06b_checkpoint
from minirt.engine.cuda_graph import DecodeGraphs
from minirt.kernels import placeholders, scaled_gemm, w4a16_gemm
from minirt.kv import kv_cache_bytes_per_token


def before_run(self, host, prev=None, pin=False):
    n = len(host["input_ids"])
    bs = self.sizes[bisect.bisect_left(self.sizes, n)]
    pad = bs - n
    packed = torch.tensor(
        [
            host["input_ids"] + [0] * pad,
            host["positions"] + [0] * pad,
            host["slot_mapping"] + [-1] * pad,
            host["context_lens"] + [0] * pad,
        ],
        dtype=torch.int64,
    )
    packed = packed.pin_memory() if pin else packed
    self.inputs[bs].copy_(packed, non_blocking=True)
    if prev is not None:
        placeholders.resolve(self.inputs[bs][0], prev, out=self.inputs[bs][0])
    tables = host["block_tables"]
    width = max(len(t) for t in tables)
    rows = torch.tensor([t + [-1] * (width - len(t)) for t in tables], dtype=torch.int64)
    rows = rows.pin_memory() if pin else rows
    self.block_tables[:n, :width].copy_(rows, non_blocking=True)
    self.graphs[bs].replay()
    return self.outputs[bs][0][:n], None


now_run = DecodeGraphs.run
out, t0 = sys.argv[1], time.time()
BATCHES = [int(b) for b in sys.argv[2:]] or [1, 64]
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
    kw = dict(device="cuda", kv_cache_bytes=12 << 30, max_num_seqs=64, piecewise_graph_sizes=[])
    llms = {"before": LLM(folder, **kw), "now": LLM(folder, **kw)}
    llms["before"].model.argmax_in_head = lambda rows: False  # torch's argmax, after the replay
    llms["before"].capture_graphs()
    weight_bytes = sum(p.numel() * p.element_size() for p in llms["now"].model.parameters())
    kv_tok = kv_cache_bytes_per_token(llms["now"].model_config, torch.bfloat16)
    runs = [(k, b) for k in ("before", "now") for b in BATCHES]
    for rep in range(2):
        for k, b in runs if rep % 2 == 0 else reversed(runs):
            DecodeGraphs.run = before_run if k == "before" else now_run
            r = minirt_decode(llms[k], b, graphs=True)
            roof = roofline_rows([r], weight_bytes, kv_tok, res["hbm_copy"]["gb_per_s"])[0]
            r.update(
                variant=k,
                rep=rep,
                floor_ms=roof["floor_ms"],
                fraction_of_floor=roof["fraction_of_floor"],
            )
            res["decode"].append(r)
            json.dump(res, open(f"{out}/b1_glue.json", "w"), indent=1)  # kept if cut short
            print(
                f"{k:7s} b{b} rep{rep} {r['tokens_per_s']:7.0f} tok/s {r['step_ms']:.3f} ms "
                f"{r['fraction_of_floor']:.3f} of the floor [{time.time() - t0:.0f}s]",
                flush=True,
            )
    llms.clear()
    torch.cuda.empty_cache()
    DecodeGraphs.run = now_run
    fp8 = {}
    for method, module in (("fp8-dynamic", scaled_gemm), ("w4a16-g128", w4a16_gemm)):
        q_kw = dict(
            device="cuda",
            kv_cache_bytes=4 << 30,
            max_num_seqs=8,
            quantization=method,
            piecewise_graph_sizes=[],
        )
        pdl_args = module.launch_args
        module.launch_args = lambda t: {"PDL": 0}  # captured so: the graphs keep it
        fp8[f"{method}-plain"] = LLM(folder, **q_kw)
        module.launch_args = pdl_args
        fp8[f"{method}-pdl"] = LLM(folder, **q_kw)
    runs = [(k, 1) for k in fp8]
    for rep in range(2):
        for k, b in runs if rep % 2 == 0 else reversed(runs):
            r = minirt_decode(fp8[k], b, graphs=True)
            r.update(variant=k, rep=rep)
            res["decode"].append(r)
            json.dump(res, open(f"{out}/b1_glue.json", "w"), indent=1)  # kept if cut short
            print(
                f"{k:18s} b{b} rep{rep} {r['tokens_per_s']:7.0f} tok/s {r['step_ms']:.3f} ms "
                f"[{time.time() - t0:.0f}s]",
                flush=True,
            )
json.dump(res, open(f"{out}/b1_glue.json", "w"), indent=1)
