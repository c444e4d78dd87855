"""`python -m minirt.bench quant` (CUDA): what each quantization format buys in GEMM time.

One JSON (`<out>/<gpu>/quant-<date>.json`), two experiments:
- `gemm`: y = x @ W.T for the linear shapes of Qwen3-0.6B and Llama-3-8B at M (tokens) in
  1 .. 4096: cuBLAS bf16, cuBLAS's 8-bit paths (`torch._scaled_mm` fp8 with per-token and
  per-channel scales, `torch._int_mm` int8 without its scales), and our Triton kernels: W4A16
  (g128, g32), FP8 and INT8 scaled GEMM, each the best of a few tile configs (recorded), with its
  relative error against the reference. Times from CUDA-graph replays (`do_bench_cudagraph`):
  a 4096 x 4096 GEMV takes microseconds, less than a Python launch. Each replay cycles through
  copies of the weights that together fill 3x the L2 cache, so every call reads its weights from
  DRAM as a decode step does (a model's layers do not fit in L2); replaying one copy would serve
  an 8 MB int4 weight (and even a 32 MB bf16 one, partly) from the 50 MB L2 of an H100.
  `dynamic_scales` rows time the per-token amax + cast that dynamic FP8 adds before its GEMM.
- `decode`: end-to-end greedy tokens/s of the Qwen3-0.6B shape at batches 1 to 128 with each
  method (`LLM(quantization=...)`, CUDA graphs).
Targets: W4A16 at M = 1 on 4096 x 4096 >= 2.5x cuBLAS bf16; FP8 at M = 4096 >= 1.5x.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from tqdm.auto import tqdm

from minirt.bench.cli import add_no_progress, add_out, progress
from minirt.kernels.scaled_gemm import scaled_gemm, scaled_gemm_dynamic, scaled_gemm_ref
from minirt.kernels.w4a16_gemm import w4a16_gemm, w4a16_gemm_ref
from minirt.quant import formats as F

# (model, layer): (N, K), as nn.Linear stores W [out, in]
SHAPES = {
    ("qwen3-0.6b", "q_proj"): (2048, 1024),
    ("qwen3-0.6b", "o_proj"): (1024, 2048),
    ("qwen3-0.6b", "gate_proj"): (3072, 1024),
    ("qwen3-0.6b", "down_proj"): (1024, 3072),
    ("llama-3-8b", "q_proj"): (4096, 4096),
    ("llama-3-8b", "k_proj"): (1024, 4096),
    ("llama-3-8b", "gate_proj"): (14336, 4096),
    ("llama-3-8b", "down_proj"): (4096, 14336),
}
MS = (1, 16, 64, 256, 1024, 4096)
# The GEMV (one row): the best of two H100 sweeps of 110-170 configs with the weights read from
# DRAM (prefetching the next tile won nothing), and split-K for the record
GEMV_CONFIGS = [{"kernel": "gemv", "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1, "num_warps": w}
                for bn, bk, w in ((4, 1024, 8), (8, 1024, 16), (4, 2048, 16), (8, 2048, 16),
                                  (4, 4096, 8), (8, 1024, 2), (16, 1024, 4), (4, 512, 4),
                                  (8, 512, 8), (8, 4096, 4), (16, 512, 16))] + [
                {"kernel": "gemv", "BLOCK_N": bn, "BLOCK_K": 512, "SPLIT_K": s, "num_warps": 4}
                for bn, s in ((8, 2), (16, 4))]  # fmt: skip


def _w4a16_configs(m: int) -> list[dict]:
    """The GEMV at one row; the tensor-core GEMM from two: up to 32 rows narrow tiles (16-64
    outputs), so that a few rows still make enough programs to fill the GPU; then the 8-bit
    GEMM's tiles."""
    if m == 1:
        return GEMV_CONFIGS
    if m > 32:
        return [{"kernel": "gemm", **c} for c in _gemm_configs(m)]
    rows = 16 if m <= 16 else 32
    return [{"kernel": "gemm", "BLOCK_M": rows, "BLOCK_N": n, "BLOCK_K": k, "num_warps": 4,
             "num_stages": stages}
            for n, k, stages in ((16, 256, 3), (32, 256, 3), (16, 128, 4), (32, 128, 3),
                                 (16, 512, 4), (64, 128, 4))]  # fmt: skip


# The W8A8 GEMV (one row, the row's codes made in each program): BLOCK_N outputs, BLOCK_K codes
SCALED_GEMV_TILES = [(4, 512, 4), (8, 512, 4), (8, 1024, 8), (16, 512, 8), (4, 1024, 4)]


def _fused_configs(m: int) -> list[dict]:
    """W8A8 with the activations quantized inside: the GEMV's tiles at one row, then the
    tensor-core GEMM's."""
    gemv = [{"kernel": "gemv", "BLOCK_N": n, "BLOCK_K": k, "num_warps": w}
            for n, k, w in SCALED_GEMV_TILES] if m == 1 else []  # fmt: skip
    return gemv + [{"kernel": "gemm", **c} for c in _gemm_configs(m)]


def _gemm_configs(m: int) -> list[dict]:
    if m <= 16:
        tiles = [(16, 64, 128), (16, 128, 128), (16, 64, 256)]
    elif m <= 64:
        tiles = [(64, 64, 128), (64, 128, 64), (32, 128, 128)]
    else:
        tiles = [(128, 128, 64), (128, 256, 64), (64, 128, 64), (128, 128, 128)]
    return [{"BLOCK_M": a, "BLOCK_N": b, "BLOCK_K": c, "num_warps": 8 if a * b >= 16384 else 4,
             "num_stages": 3} for a, b, c in tiles]  # fmt: skip


def _copies(*weights: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """The weights, and enough clones that all of them together fill 3x the L2 cache."""
    nbytes = sum(t.numel() * t.element_size() for t in weights)
    l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    n = max(1, -(-3 * l2 // nbytes)) if nbytes else 1
    return [weights] + [tuple(t.clone() for t in weights) for _ in range(n - 1)]


def _time_ms(fn, sets: list[tuple] | None = None) -> float:
    """ms per call of fn(*weights), the weight sets taken in turn (`_copies`: from DRAM)."""
    from triton.testing import do_bench_cudagraph

    sets = sets or [()]

    def every_set():
        for ws in sets:
            fn(*ws)

    return do_bench_cudagraph(every_set, rep=25) / len(sets)


def _best(run, configs, sets=None) -> tuple[float, dict | None]:
    """The fastest config (run(config, *weights)) that compiles and fits (shared memory,
    registers)."""
    best = (float("inf"), None)
    for c in configs:
        try:
            best = min(best, (_time_ms(lambda *ws, c=c: run(c, *ws), sets), c),
                       key=lambda t: t[0])  # fmt: skip
        except Exception:  # noqa: BLE001 - an oversized tile is skipped, the others still run
            continue
    return best


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    return ((out - ref).norm() / ref.norm().clamp(min=1e-12)).item()


def gemm_rows(shapes=SHAPES, ms=MS, progress: bool = True,
              methods: set[str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    cases = [(s, m) for s in shapes for m in ms]
    for (model, layer), m in tqdm(cases, desc="gemm", disable=not progress):
        n, k = shapes[model, layer]
        found = _one_shape(m, n, k, g, methods)
        bf16 = found["bf16"][0]
        for method, (t, config, err) in found.items():
            rows.append({"experiment": "gemm", "model": model, "layer": layer, "M": m, "N": n,
                         "K": k, "method": method, "ms": t, "tflops": 2 * m * n * k / t / 1e9,
                         "speedup_vs_bf16": bf16 / t, "config": config,
                         "rel_err": err})  # fmt: skip
    return rows


def _one_shape(m: int, n: int, k: int, g: torch.Generator, methods=None) -> dict[str, tuple]:
    """{method: (ms, config, rel_err)} for one [M, K] x [N, K]^T product: bf16 and `methods`
    (default all)."""
    w = torch.randn(n, k, device="cuda", generator=g) * 0.02
    x = torch.randn(m, k, device="cuda", generator=g).bfloat16()
    wb = w.bfloat16()
    found: dict[str, tuple[float, dict | None, float | None]] = {}
    found["bf16"] = (_time_ms(lambda w_: torch.nn.functional.linear(x, w_), _copies(wb)), None,
                     None)  # fmt: skip
    if methods is not None and not methods & {"fp8", "int8", "scaled_mm_fp8", "int_mm"}:
        return found | _w4a16(x, w, m, methods)
    # FP8: per-channel weights, per-token activations (codes made once: the GEMM alone) ...
    q8 = F.quantize_fp8(w)
    xq, xs = F.quantize_fp8_rows(x)  # [M, K], [M]
    ref8 = scaled_gemm_ref(xq, xs, q8.data, q8.scales)

    def dynamic_scales():  # ... and what computing those per-token scales costs
        return F.quantize_fp8_rows(x)

    found["dynamic_scales"] = (_time_ms(dynamic_scales), None, None)

    def scaled_mm(data=q8.data, scales=q8.scales):
        sa, sb = xs[:, None], scales[None, :]
        return torch._scaled_mm(xq, data.t(), sa, sb, out_dtype=torch.bfloat16)

    fp8_sets = _copies(q8.data, q8.scales)
    try:
        found["scaled_mm_fp8"] = (_time_ms(scaled_mm, fp8_sets), None, _rel(scaled_mm(), ref8))
    except RuntimeError:  # cuBLASLt refuses some shapes
        pass
    t, c = _best(lambda c, d, s: scaled_gemm(xq, xs, d, s, config=c), _gemm_configs(m), fp8_sets)
    found["fp8"] = (t, c, _rel(scaled_gemm(xq, xs, q8.data, q8.scales, config=c), ref8))
    # ... and with the activations quantized inside the GEMM (what the engine runs)
    t, c = _best(lambda c, d, s: scaled_gemm_dynamic(x, d, s, config=c), _fused_configs(m),
                 fp8_sets)  # fmt: skip
    found["fp8_fused"] = (t, c, _rel(scaled_gemm_dynamic(x, q8.data, q8.scales, config=c), ref8))

    # INT8 W8A8
    (xi, xis), (wi, wis) = F.quantize_int8_rows(x), F.quantize_int8_rows(w)
    int8_sets = _copies(wi, wis)
    t, c = _best(lambda c, d, s: scaled_gemm(xi, xis, d, s, config=c), _gemm_configs(m), int8_sets)
    found["int8"] = (t, c, _rel(scaled_gemm(xi, xis, wi, wis, config=c),
                                scaled_gemm_ref(xi, xis, wi, wis)))  # fmt: skip
    if m > 16:  # torch._int_mm needs M > 16: the raw int32 product, scales not applied
        found["int_mm"] = (_time_ms(lambda d, s: torch._int_mm(xi, d.t()), int8_sets), None, None)

    return found | _w4a16(x, w, m, methods)


def _w4a16(x, w, m, methods) -> dict[str, tuple]:
    """W4A16, dequantised in the kernel: g128 and g32."""
    found = {}
    for gs in (128, 32):
        if methods is not None and f"w4a16-g{gs}" not in methods:
            continue
        q = F.quantize_int4(w, gs, interleaved=True)
        args = (x, q)
        configs = _w4a16_configs(m)
        sets = _copies(q.packed, q.scales)

        def run(c, packed, scales, q=q):
            return w4a16_gemm(x, F.Int4Weight(packed, scales, None, q.shape, q.group_size, True),
                              config=c)  # fmt: skip

        t, c = _best(run, configs, sets)
        found[f"w4a16-g{gs}"] = (t, c, _rel(w4a16_gemm(*args, config=c), w4a16_gemm_ref(*args)))
    return found


def decode_rows(methods=(None, "w4a16-g128", "fp8-dynamic", "int8"),
                batches=(1, 2, 4, 8, 16, 32, 64, 128),
                max_tokens: int = 64, progress: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    from minirt import LLM, SamplingParams
    from minirt.bench.roofline import qwen3_06b_checkpoint
    from minirt.bench.spec import prompts

    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        qwen3_06b_checkpoint(folder)
        for method in tqdm(methods, desc="decode", disable=not progress):
            llm = LLM(folder, device="cuda", quantization=method, max_num_seqs=max(batches),
                      kv_cache_bytes=4 * 2**30)  # fmt: skip
            llm.generate(prompts(4), SamplingParams(max_tokens=8), use_tqdm=False)  # warm-up
            for b in batches:
                best = None
                for _ in range(2):
                    llm.generate(prompts(b), params, use_tqdm=False)
                    s = llm.last_stats
                    best = s if best is None or s.elapsed_s < best.elapsed_s else best
                weights = sum(t.numel() * t.element_size() for t in llm.model.state_dict().values())
                rows.append({"experiment": "decode", "model": "qwen3-0.6b",
                             "method": method or "bf16", "batch": b, "weight_bytes": weights,
                             "tokens_per_s": best.num_generated_tokens
                             / best.elapsed_s})  # fmt: skip
            del llm
            torch.cuda.empty_cache()
    return rows


def kv_cache_rows(batches=(16, 64), context: int = 2048, max_tokens: int = 256,
                  progress: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Decode tokens/s over long contexts with the KV pool in bf16 and in FP8 (same bytes): the
    steps where the whole batch decodes (`minirt.bench.spec.full_batch_decode`), where the
    attention reads `context` tokens of KV per sequence; and how many tokens each pool holds.
    `max_tokens` must outlast the chunked prefill of the batch's prompts, or the first ones end
    before the last are in and no step has the whole batch (64 x 2,048 tokens at 64 did)."""
    from minirt import LLM, SamplingParams
    from minirt.bench.roofline import qwen3_06b_checkpoint
    from minirt.bench.spec import full_batch_decode

    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    g = torch.Generator().manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        qwen3_06b_checkpoint(folder)
        for kv in tqdm(("auto", "fp8"), desc="kv cache", disable=not progress):
            llm = LLM(folder, device="cuda", kv_cache_dtype=kv, max_num_seqs=max(batches),
                      kv_cache_bytes=20 * 2**30,
                      max_model_len=context + max_tokens + 16)  # fmt: skip
            for b in batches:
                ids = torch.randint(10, 1000, (b, context), generator=g).tolist()
                row = full_batch_decode(llm, ids, params)
                rows.append({"experiment": "kv_cache", "model": "qwen3-0.6b",
                             "kv_cache_dtype": str(llm.kv_dtype).removeprefix("torch."),
                             "batch": b, "context": context,
                             "pool_tokens": llm.num_blocks * llm.config.block_size,
                             "tokens_per_s": row["tokens_per_s"],
                             "decode_steps": row["num_steps"]})  # fmt: skip
            del llm
            torch.cuda.empty_cache()
    return rows


def run(out_dir, command: str, progress: bool = True, methods=None) -> Any:
    """All of it; or with `methods` (e.g. {"w4a16-g128"}) only those GEMMs beside bf16."""
    from minirt.bench.timing import gpu_device
    from minirt.results import write_results

    rows = gemm_rows(progress=progress, methods=methods)
    try:
        if methods is not None:
            raise StopIteration  # GEMMs only
        rows += decode_rows(progress=progress)
        rows += kv_cache_rows(progress=progress)
    except StopIteration:
        pass
    except Exception:  # noqa: BLE001 - keep the GEMM timings; say why decode is missing
        import traceback

        traceback.print_exc()
    config = {"gpu": torch.cuda.get_device_name(),
              "gemm": "random N(0, 0.02) weights, N(0, 1) bf16 activations; ms = median of CUDA "
              "graph replays (triton.testing.do_bench_cudagraph), each cycling through weight "
              "copies that fill 3x the L2 (weights from DRAM); ours: best of the configs "
              "listed; rel_err against scaled_gemm_ref / w4a16_gemm_ref",
              "decode": "Qwen3-0.6B shape, random weights, greedy, 64 new tokens, CUDA "
              "graphs",
              "kv_cache": "the same model, bf16 weights, KV pool bf16 or FP8 E4M3 in 20 GiB; "
              "2,048-token random prompts, 256 new tokens; tokens/s over the steps where "
              "all decode"}  # fmt: skip
    return write_results("quant", gpu_device(), rows, out_dir, command, config=config)


def summary(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'shape':<22} {'M':>5} " + " ".join(f"{m:>14}" for m in _methods(rows))]
    keys = dict.fromkeys(
        (r["model"], r["layer"], r["M"]) for r in rows if r["experiment"] == "gemm"
    )
    for model, layer, m in keys:
        got = {r["method"]: r for r in rows if r["experiment"] == "gemm" and
               (r["model"], r["layer"], r["M"]) == (model, layer, m)}  # fmt: skip
        cells = [f"{got[x]['ms'] * 1e3:8.1f}us {got[x]['speedup_vs_bf16']:4.2f}x" if x in got
                 else f"{'-':>14}" for x in _methods(rows)]  # fmt: skip
        lines.append(f"{model + '/' + layer:<22} {m:>5} " + " ".join(cells))
    for r in (r for r in rows if r["experiment"] == "kv_cache"):
        lines.append(
            f"kv {r['kv_cache_dtype']:<14} batch {r['batch']:>3} x {r['context']} "
            f"context: {r['tokens_per_s']:8.0f} tok/s, pool {r['pool_tokens']:,} tokens"
        )
    for r in (r for r in rows if r["experiment"] == "decode"):
        lines.append(
            f"decode {r['method']:<12} batch {r['batch']:>3}: {r['tokens_per_s']:8.0f} tok/s"
        )
    return "\n".join(lines)


def _methods(rows) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows if r["experiment"] == "gemm"))


def add_parser(topics) -> None:
    p = topics.add_parser(
        "quant",
        help="(CUDA) quantized GEMMs (W4A16, FP8, INT8) vs cuBLAS, and decode tokens/s",
        description="GEMM time of the Qwen3-0.6B and Llama-3-8B linear shapes at M = 1..4096: "
        "cuBLAS bf16, torch._scaled_mm fp8, torch._int_mm, and minirt's Triton W4A16 / FP8 / "
        "INT8 kernels; decode tokens/s with each method. Writes OUT/<gpu>/quant-<date>.json.",
    )
    add_out(p)
    add_no_progress(p)
    p.add_argument("--methods", nargs="+", help="only these GEMMs beside bf16 (no decode)")


def main(args, command: str) -> Any:
    from minirt.results import load_results

    methods = set(args.methods) if args.methods else None
    path = run(args.out, command, progress=progress(args), methods=methods)
    print(summary(load_results(path)["results"]))
    return path
