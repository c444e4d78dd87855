"""`kv_cache_dtype="fp8"`: the pool holds E4M3, so the same bytes hold more tokens; what a
sequence stored is what it reads back however it got there (swapped out and in, shared through
the prefix cache); the accuracy cost is measured, not assumed."""

import pytest
import torch

from minirt import LLM, SamplingParams
from minirt.kv import kv_cache_bytes_per_token
from minirt.quant.accuracy import held_out_text, nats_per_byte

PROMPTS = ["def fib(n):", "class Stack:", "import os\n", "for i in range(", "with open("]
PARAMS = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
BUDGET = 2**22


def generate(llm, prompts=PROMPTS):
    return [o.token_ids for o in llm.generate(prompts, PARAMS, use_tqdm=False)]


def test_the_same_bytes_hold_as_many_more_tokens_as_the_model_dtype_is_wider():
    plain, fp8 = LLM(kv_cache_bytes=BUDGET), LLM(kv_cache_bytes=BUDGET, kv_cache_dtype="fp8")
    assert fp8.kv_pool.dtype == torch.float8_e4m3fn and plain.kv_pool.dtype == torch.float32
    assert fp8.num_blocks == 4 * plain.num_blocks  # 1 byte a value instead of 4
    per_block = fp8.config.block_size * kv_cache_bytes_per_token(fp8.model_config, fp8.kv_dtype)
    assert fp8.num_blocks == BUDGET // per_block and fp8.kv_pool.numel() <= BUDGET
    with pytest.raises(ValueError, match=r"kv_cache_dtype must be one of \['auto', 'fp8'\]"):
        LLM(kv_cache_dtype="int4")


def test_swapped_out_fp8_blocks_come_back_bitwise_and_prefix_hits_read_what_was_stored():
    """Swap moves the pool's bytes, so swap preemption must give recompute's tokens; a prefix
    hit reads the blocks another request stored, so the cache must not change a token."""
    tight = {"kv_cache_dtype": "fp8", "block_size": 4, "max_num_batched_tokens": 24,
             "num_kv_blocks": 24, "prefix_cache": None}  # fmt: skip
    prompts = PROMPTS * 2
    want = generate(LLM(**tight, preemption_mode="recompute"), prompts)
    swap = LLM(**tight, preemption_mode="swap")
    assert generate(swap, prompts) == want
    assert swap.last_stats.num_preemptions > 0  # 24 blocks of 4 tokens: they had to wait
    assert swap.block_manager.num_free_blocks == swap.num_blocks
    shared = ["You answer in one word. Question: " + p for p in PROMPTS]
    alone = generate(LLM(kv_cache_dtype="fp8", block_size=4, prefix_cache=None), shared)
    cached = LLM(kv_cache_dtype="fp8", block_size=4, prefix_cache="radix")
    for _ in range(2):
        assert generate(cached, shared) == alone
    assert cached.last_stats.num_cached_tokens > 0


@pytest.mark.cpu_isa
def test_fp8_kv_costs_the_embedded_model_little_held_out_accuracy():
    text = held_out_text(1000)
    full = nats_per_byte(LLM(), text)
    fp8 = nats_per_byte(LLM(kv_cache_dtype="fp8"), text)
    assert fp8 != full  # the cache really is rounded
    assert abs(fp8 - full) / full < 0.01  # measured: +0.14 % on the first 2,000 bytes


@pytest.mark.gpu
def test_on_cuda_an_fp8_pool_runs_with_cuda_graphs_and_its_triton_kernels():
    """The Triton engine (CUDA graphs, split-K decode) on an FP8 pool gives the tokens of the
    reference kernels on the same pool, as far as bf16 lets two kernels agree."""
    cuda = {"device": "cuda", "kv_cache_bytes": 2**26, "kv_cache_dtype": "fp8"}
    fast = generate(LLM(**cuda))
    ref = generate(LLM(**cuda, kernel_backend="torch", enforce_eager=True))
    same = sum(a == b for f, r in zip(fast, ref, strict=True) for a, b in zip(f, r, strict=True))
    assert same / sum(map(len, ref)) > 0.9
    full = nats_per_byte(LLM(device="cuda"), held_out_text(1000))
    assert abs(nats_per_byte(LLM(**cuda), held_out_text(1000)) - full) / full < 0.02
