"""MoEBlock against Hugging Face's Qwen3MoeSparseMoeBlock and against the per-token loop; the
grouped GEMMs (reference, loop, Triton under the interpreter) all give the same block output."""

import pytest
import torch

from minirt.config import PRESETS
from minirt.moe import MoEBlock, moe_reference


def _block(**kw):
    torch.manual_seed(0)
    return MoEBlock(hidden=32, intermediate=16, num_experts=8, top_k=2, **kw)


def test_block_matches_transformers_qwen3_moe():
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    cfg = Qwen3MoeConfig(hidden_size=32, moe_intermediate_size=16, num_experts=8,
                         num_experts_per_tok=2, norm_topk_prob=True)  # fmt: skip
    torch.manual_seed(0)
    hf = Qwen3MoeSparseMoeBlock(cfg)
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = _block()
    with torch.no_grad():  # Hugging Face's names and layout: a plain copy
        ours.gate.weight.copy_(hf.gate.weight)
        ours.experts.gate_up_proj.copy_(hf.experts.gate_up_proj)
        ours.experts.down_proj.copy_(hf.experts.down_proj)
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x.reshape(-1, 32)), hf(x).reshape(-1, 32))


# Triton needs CUDA tensors, or CPU ones under TRITON_INTERPRET=1 (tests/conftest.py sets it
# when there is no GPU)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.on_gpu_too  # the GPU pass of ./workbench test runs it on CUDA


@pytest.mark.parametrize("gemm", ["ref", "loop", "triton"])
@pytest.mark.parametrize("shared", [0, 24])
def test_grouped_block_equals_the_per_token_loop(gemm, shared):
    block = _block(shared_intermediate=shared).to(DEVICE)
    x = torch.randn(13, 32, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(block(x, gemm=gemm), moe_reference(block, x))


def test_a_capacity_drops_assignments_and_the_reference_agrees():
    block = _block(capacity_factor=0.5)  # half the fair share: many drops
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(3))
    r = block.route(x)
    assert r.stats.dropped == int((~r.keep).sum()) > 0
    assert (r.weights[~r.keep] == 0).all()
    with torch.no_grad():
        torch.testing.assert_close(block(x), moe_reference(block, x))
        assert not torch.allclose(block(x), _block()(x))  # dropping changed the output


def test_from_config_builds_qwen3_30b_a3b_expert_shapes_on_meta():
    with torch.device("meta"):
        block = MoEBlock.from_config(PRESETS["qwen3-30b-a3b"])
    assert tuple(block.experts.gate_up_proj.shape) == (128, 2 * 768, 2048)
    assert tuple(block.gate.weight.shape) == (128, 2048)
    with pytest.raises(ValueError, match="dense"):
        MoEBlock.from_config(PRESETS["qwen3-8b"])
