"""Shared fixtures: tiny random Hugging Face checkpoints (Qwen3, Llama) and the embedded engine."""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU, Triton kernels run in Triton's interpreter (numpy on the CPU). It must be chosen
# before triton is first imported (minirt imports it): @triton.jit reads it when it decorates.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# KV pools start full of NaN in tests (minirt.kv.pool): a slot read before it is written would
# otherwise hold zeros or an earlier test's KV and could leave the tokens unchanged by luck.
os.environ.setdefault("MINIRT_POISON_KV", "1")

from minirt.model.tokenizer import save_byte_tokenizer  # noqa: E402


def make_hf_checkpoint(folder, arch: str = "qwen3", tied: bool = True, seed: int = 0, **overrides):
    """Build a small random model with transformers and save_pretrained it into `folder`."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    kw = dict(
        vocab_size=264,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        rope_theta=10000.0,
        eos_token_id=256,
        tie_word_embeddings=tied,
    )
    kw.update(overrides)
    if arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**kw))
    else:
        model = LlamaForCausalLM(LlamaConfig(**kw))
    model.eval()
    model.save_pretrained(folder)
    save_byte_tokenizer(folder, kw["max_position_embeddings"])
    return model


@pytest.fixture(scope="session")
def qwen3_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen3")
    return folder, make_hf_checkpoint(folder, "qwen3", tied=True)


@pytest.fixture(scope="session")
def embedded_llm():
    """One engine on the embedded target, shared by tests that leave it clean."""
    from minirt import LLM

    return LLM(device="cpu")


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: without it they are skipped, with the reason shown."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `pytest -m gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
