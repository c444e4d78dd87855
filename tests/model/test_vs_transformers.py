"""The reference test: minirt loads what transformers saved and computes the same function."""

import pytest
import torch

from minirt import LLM, SamplingParams
from minirt.model.attention import AttentionMetadata
from minirt.model.loader import load_model
from tests.conftest import make_hf_checkpoint


def prefill_logits(model, block_size: int, ids: list[int]) -> torch.Tensor:
    """Run one sequence through minirt's model as a single prefill on a private pool."""
    c = model.config
    n = len(ids)
    num_blocks = -(-n // block_size)
    pool = torch.empty(
        2, c.num_hidden_layers, num_blocks, block_size, c.num_key_value_heads, c.head_dim
    )
    model.bind_kv_cache(pool)
    meta = AttentionMetadata(
        slot_mapping=torch.arange(n),
        query_start_loc=torch.tensor([0, n]),
        context_lens=torch.tensor([n]),
        block_tables=torch.arange(num_blocks, dtype=torch.int32)[None],
        max_query_len=n,
        max_context_len=n,
    )
    with torch.no_grad():
        hidden = model(torch.tensor(ids), torch.arange(n), meta)
        return model.compute_logits(hidden)


CASES = [("qwen3", True), ("qwen3", False), ("llama", False), ("llama", True)]


@pytest.mark.parametrize("arch, tied", CASES)
def test_logits_match_transformers_in_fp32(tmp_path, arch, tied):
    hf = make_hf_checkpoint(tmp_path, arch, tied=tied, seed=1)
    model, _ = load_model(tmp_path)
    ids = torch.randint(0, 264, (45,), generator=torch.Generator().manual_seed(2)).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    ours = prefill_logits(model, block_size=8, ids=ids)
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch, tied", CASES[:3])
def test_32_token_greedy_continuations_equal_transformers_generate(tmp_path, arch, tied):
    hf = make_hf_checkpoint(tmp_path, arch, tied=tied, seed=3, rope_theta=500.0)
    llm = LLM(tmp_path, device="cpu", block_size=4, kv_cache_bytes=2**20)
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (1, 7, 30)]
    outs = llm.generate(
        prompts, SamplingParams(temperature=0, max_tokens=32, ignore_eos=True), use_tqdm=False
    )
    for p, out in zip(prompts, outs, strict=True):
        with torch.no_grad():
            ref = hf.generate(
                torch.tensor([p]),
                max_new_tokens=32,
                min_new_tokens=32,
                do_sample=False,
                pad_token_id=257,
            )[0, len(p) :].tolist()
        assert out.token_ids == ref
