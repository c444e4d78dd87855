"""The same engine on CUDA: it must agree with transformers there too (gpu marker)."""

import pytest
import torch

from minirt import LLM, SamplingParams
from minirt.model.loader import resolve_model_path
from tests.engine.test_engine_behaviour import code_snippets

pytestmark = pytest.mark.gpu


def test_cuda_fp32_greedy_matches_transformers_on_cuda():
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(resolve_model_path(None), dtype=torch.float32)
    hf = hf.cuda().eval()
    llm = LLM(device="cuda", dtype="float32", kv_cache_bytes=64 * 2**20)
    prompts = code_snippets(8)
    outs = llm.generate(
        prompts, SamplingParams(temperature=0, max_tokens=32, ignore_eos=True), use_tqdm=False
    )
    for p, out in zip(prompts, outs, strict=True):
        ids = torch.tensor([llm.tokenizer.encode(p)], device="cuda")
        ref = hf.generate(
            ids, max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=257
        )[0, ids.shape[1] :].tolist()
        assert out.token_ids == ref
    assert llm.block_manager.num_free_blocks == llm.num_blocks


def test_cuda_bf16_engine_sizes_its_pool_from_free_memory_and_generates():
    llm = LLM(device="cuda", gpu_memory_utilization=0.5)
    assert llm.kv_pool.is_cuda and llm.kv_pool.dtype == torch.bfloat16
    free, total = torch.cuda.mem_get_info()
    assert llm.kv_pool.numel() * 2 <= 0.5 * total
    outs = llm.generate(
        code_snippets(32), SamplingParams(temperature=0.7, seed=1, max_tokens=32), use_tqdm=False
    )
    assert all(len(o.token_ids) >= 1 for o in outs)
    assert llm.block_manager.num_free_blocks == llm.num_blocks
