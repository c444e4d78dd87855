"""A roofline model of one decode step: bytes moved vs FLOPs, on a GPU given by two numbers.

A decode step reads every weight once (whatever the batch) plus each sequence's KV, and does
about 2 FLOPs per weight per sequence plus attention. Time is max(bytes / bandwidth, FLOPs /
peak): memory-bound while the batch is small. Peaks are parameters; `H100_SXM` holds datasheet
figures, not measurements. Notebook 03 (latency vs throughput) plots it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from minirt.config import ModelConfig
from minirt.hardware import H100_SXM, Hardware
from minirt.kv import kv_cache_bytes_per_token


@dataclass
class DecodeStep:
    batch: int
    context_len: int
    weight_bytes: float
    kv_bytes: float  # KV read for attention plus the new token's K/V written
    flops: float
    memory_s: float
    compute_s: float

    @property
    def time_s(self) -> float:
        return max(self.memory_s, self.compute_s)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s > self.memory_s else "memory"

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / (self.weight_bytes + self.kv_bytes)

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.time_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(time_s=self.time_s, bound=self.bound, tokens_per_s=self.tokens_per_s)
        return d


def matmul_params(config: ModelConfig) -> int:
    """Weights a decode token multiplies by: all but an untied input embedding (a row lookup)."""
    untied_embedding = 0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size
    return config.num_parameters() - untied_embedding


def decode_step(
    config: ModelConfig,
    batch: int,
    context_len: int,
    hw: Hardware = H100_SXM,
    weight_bytes_per_param: float = 2.0,
    kv_dtype: str = "bfloat16",
) -> DecodeStep:
    """Bytes, FLOPs and roofline time of one decode step of `batch` sequences of `context_len`.

    Weights: read once per step (a dense model; every expert of an MoE is counted).
    KV: each sequence reads `context_len` tokens' K/V and writes one token's.
    FLOPs: 2 per matmul weight per sequence, plus attention's QK^T and PV: 2 x 2 x context_len x
    q_heads x head_dim per layer per sequence.
    """
    if batch < 1 or context_len < 0:
        raise ValueError(f"batch must be >= 1 and context_len >= 0, got {batch}, {context_len}")
    c = config
    params = matmul_params(c)
    weight_bytes = params * weight_bytes_per_param
    kv_bytes = batch * (context_len + 1) * kv_cache_bytes_per_token(c, kv_dtype)
    attn_flops = 4 * context_len * c.num_attention_heads * c.head_dim * c.num_hidden_layers
    flops = batch * (2 * params + attn_flops)
    return DecodeStep(
        batch=batch,
        context_len=context_len,
        weight_bytes=weight_bytes,
        kv_bytes=kv_bytes,
        flops=flops,
        memory_s=(weight_bytes + kv_bytes) / hw.mem_bandwidth,
        compute_s=flops / hw.peak_flops,
    )


def crossover_batch(
    config: ModelConfig,
    context_len: int,
    hw: Hardware = H100_SXM,
    weight_bytes_per_param: float = 2.0,
    kv_dtype: str = "bfloat16",
    max_batch: int = 1 << 20,
) -> int | None:
    """Smallest batch at which a decode step becomes compute-bound, or None below `max_batch`.

    Per sequence the KV traffic grows as fast as the FLOPs, so with long contexts the step may
    never turn compute-bound: attention's intensity (about q_heads / kv_heads FLOPs per byte in
    bf16) is far below the ridge point.
    """

    def compute_bound(b: int) -> bool:
        s = decode_step(config, b, context_len, hw, weight_bytes_per_param, kv_dtype)
        return s.compute_s >= s.memory_s

    if not compute_bound(max_batch):
        return None
    lo, hi = 1, max_batch  # compute_bound is monotone in b: binary search
    while lo < hi:
        mid = (lo + hi) // 2
        if compute_bound(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def decode_table(
    config: ModelConfig, batches: list[int], context_len: int, hw: Hardware = H100_SXM
) -> list[dict[str, Any]]:
    """One row per batch: modelled ms per step (= TPOT), tokens/s, and what bounds the step."""
    rows = []
    for b in batches:
        s = decode_step(config, b, context_len, hw)
        rows.append(
            {
                "batch": b,
                "weights_GB": s.weight_bytes / 1e9,
                "kv_GB": s.kv_bytes / 1e9,
                "GFLOP": s.flops / 1e9,
                "ms_per_step": s.time_s * 1e3,
                "tokens_per_s": s.tokens_per_s,
                "bound": s.bound,
            }
        )
    return rows


def max_batch_under_tpot(
    config: ModelConfig,
    context_len: int,
    tpot_s: float,
    hw: Hardware = H100_SXM,
    max_batch: int = 4096,
) -> int:
    """Largest batch whose modelled decode step stays within `tpot_s` (0 if even batch 1 does not).

    Step time grows with the batch, so the answer is found by binary search.
    """
    if decode_step(config, 1, context_len, hw).time_s > tpot_s:
        return 0
    lo, hi = 1, max_batch
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if decode_step(config, mid, context_len, hw).time_s <= tpot_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


def compare_with_bench(
    record: dict[str, Any] | None, config: ModelConfig, system: str = "minirt-graphs"
) -> list[dict[str, Any]]:
    """Measured decode steps of a benchmark record beside the model.

    The record's `hbm_copy` and `bf16_matmul` rows give measured ceilings. Its decode rows
    (batch, prompt_len, new_tokens, step_ms) are compared with the model at the run's mean
    context, under datasheet and under measured ceilings: `decode` rows of `system` (a
    `python -m minirt.bench gpu` run; "minirt-graphs" is the engine with CUDA graphs) and the
    `eager_decode` rows of the older `python -m minirt.bench roofline` runs. Empty when there is
    no such record.
    """
    if record is None:
        return []
    rows = record.get("results", [])
    by_name = {r.get("name"): r for r in rows}
    if "hbm_copy" not in by_name or "bf16_matmul" not in by_name:
        return []
    measured = Hardware(
        "measured ceilings",
        by_name["hbm_copy"]["gb_per_s"] * 1e9,
        by_name["bf16_matmul"]["tflop_per_s"] * 1e12,
    )
    out = []
    for r in rows:
        wanted = r.get("name") == "decode" and r.get("system") == system
        if not (wanted or r.get("name") == "eager_decode") or "step_ms" not in r:
            continue
        context = r["prompt_len"] + r["new_tokens"] // 2
        sheet = decode_step(config, r["batch"], context, H100_SXM)
        meas = decode_step(config, r["batch"], context, measured)
        out.append(
            {
                "batch": r["batch"],
                "measured_ms": r["step_ms"],
                "model_datasheet_ms": sheet.time_s * 1e3,
                "model_measured_ceilings_ms": meas.time_s * 1e3,
                "measured_over_model": r["step_ms"] / (meas.time_s * 1e3),
            }
        )
    return out


def measure_cpu(
    threads: int = 1, nbytes: int = 64 << 20, n: int = 512, repeats: int = 5
) -> Hardware:
    """This machine's CPU as the roofline's two numbers, measured on `threads` torch threads.

    Bandwidth: the best of `repeats` copies of `nbytes` (bytes read plus bytes written, as a
    GPU's copy benchmark counts them); compute: the best of `repeats` fp32 n x n matmuls. The
    embedded model runs in fp32 on one thread, so those are the ceilings its decode steps meet.
    """
    import time

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.ones(nbytes // 4)
        dst = torch.empty_like(src)
        a, b = torch.randn(n, n), torch.randn(n, n)
        copy_s, matmul_s = float("inf"), float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            dst.copy_(src)
            copy_s = min(copy_s, time.perf_counter() - t)
            t = time.perf_counter()
            torch.mm(a, b)
            matmul_s = min(matmul_s, time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)
    name = f"this CPU ({threads} thread{'s' if threads > 1 else ''})"
    return Hardware(name, 2 * nbytes / copy_s, 2 * n**3 / matmul_s)
