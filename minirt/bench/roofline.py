"""`python -m minirt.bench roofline` (CUDA): two ceilings, and where eager decode sits below them.

Measures, in one run: HBM copy bandwidth (bytes read + written), bf16 matmul TFLOP/s, and the
engine's decode step time on a Qwen3-0.6B-shaped model (random bf16 weights written as a Hugging
Face checkpoint, nothing downloaded) at several batch sizes. Notebook 03 compares them.
"""

from __future__ import annotations

import statistics
import tempfile
from typing import Any

import torch
from tqdm.auto import tqdm

from minirt.bench.cli import add_out
from minirt.bench.timing import cuda_median_ms, gpu_device
from minirt.results import load_results, write_results


def ceilings() -> list[dict[str, Any]]:
    n = 2**28  # 512 MiB of bf16 per buffer: far beyond the L2
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    ms = cuda_median_ms(lambda: dst.copy_(src))
    copy = {"name": "hbm_copy", "bytes": 2 * src.nbytes, "ms": ms,
            "gb_per_s": 2 * src.nbytes / ms / 1e6}  # fmt: skip
    m = 8192
    a = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    ms = cuda_median_ms(lambda: a @ b)
    mm = {"name": "bf16_matmul", "shape": [m, m, m], "ms": ms, "tflop_per_s": 2 * m**3 / ms / 1e9}
    return [copy, mm]


def qwen3_06b_checkpoint(folder: str) -> None:
    """Random bf16 weights in Qwen3-0.6B's shape, saved as a Hugging Face checkpoint."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from minirt.config import PRESETS
    from minirt.model.tokenizer import save_byte_tokenizer

    p = PRESETS["qwen3-0.6b"]
    cfg = Qwen3Config(
        vocab_size=p.vocab_size, hidden_size=p.hidden_size, intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_hidden_layers, num_attention_heads=p.num_attention_heads,
        num_key_value_heads=p.num_key_value_heads, head_dim=p.head_dim, rope_theta=p.rope_theta,
        max_position_embeddings=4096, tie_word_embeddings=True, dtype="bfloat16",
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    save_byte_tokenizer(folder, 4096)


def decode_steps(batch_sizes=(1, 8, 32, 64, 128, 256), prompt_len=128, new_tokens=64):
    from minirt import LLM, SamplingParams

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        qwen3_06b_checkpoint(folder)
        llm = LLM(folder, device="cuda", trace=True, gpu_memory_utilization=0.5)
        weight_bytes = sum(p.numel() * p.element_size() for p in llm.model.parameters())
        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        g = torch.Generator().manual_seed(0)
        for bs in tqdm(batch_sizes, desc="decode"):
            prompts = torch.randint(0, 256, (bs, prompt_len), generator=g).tolist()
            llm.generate(prompts[:1], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
            llm.generate(prompts, params, use_tqdm=False)
            steps = [e for e in llm.recorder.events
                     if e["type"] == "step" and e["num_decode_tokens"] == bs]  # fmt: skip
            step_ms = statistics.median(e["schedule_ms"] + e["forward_ms"] for e in steps)
            fwd_ms = statistics.median(e["forward_ms"] for e in steps)
            rows.append({
                "name": "eager_decode", "batch": bs, "prompt_len": prompt_len,
                "new_tokens": new_tokens, "step_ms": step_ms, "forward_ms": fwd_ms,
                "tokens_per_s": bs / step_ms * 1e3, "weight_bytes": weight_bytes,
                "attention": "torch reference (paged gather + written-out softmax), no CUDA graphs",
            })  # fmt: skip
    return rows


def run(out_dir, command: str) -> Any:
    results = ceilings() + decode_steps()
    config = {"gpu": torch.cuda.get_device_name(), "model": "qwen3-0.6b shape, random bf16"}
    return write_results("roofline", gpu_device(), results, out_dir, command, config=config)


def add_parser(topics) -> None:
    p = topics.add_parser(
        "roofline",
        help="(CUDA) HBM copy GB/s, bf16 matmul TFLOP/s and eager decode step times",
    )
    add_out(p)


def main(args, command: str) -> Any:
    path = run(args.out, command)
    for row in load_results(path)["results"]:
        print(row)
    return path
