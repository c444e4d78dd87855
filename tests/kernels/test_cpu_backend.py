"""The CPU path (minirt.kernels.cpu) against the references it stands in for, role by role, on
fresh random inputs (NaN in every slot a kernel must not read), then the engine end to end."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt import LLM, SamplingParams
from minirt.kernels import cpu
from minirt.kernels.backend import CPU, TORCH, get_backend
from minirt.kernels.decode_attention import decode_attention_ref
from minirt.kernels.prefill_attention import prefill_attention_ref
from minirt.kernels.qk_norm_rope import qk_norm_rope_ref
from minirt.kernels.rms_norm import rms_norm_ref
from minirt.kernels.rotary import rope_ref
from minirt.kernels.store_kv import store_kv_ref
from tests.kernels.conftest import TOLERANCE, make_paged, rel_error

DTYPES = [torch.float32, torch.bfloat16]


@settings(max_examples=15, deadline=None)
@given(
    ctx_lens=st.lists(st.integers(0, 70), min_size=1, max_size=5).filter(any),
    group=st.sampled_from([1, 2, 4]),
    block_size=st.sampled_from([16, 32]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_decode_attention_matches_the_reference(ctx_lens, group, block_size, dtype, seed):
    p = make_paged([1] * len(ctx_lens), [max(c, 1) for c in ctx_lens], heads=2 * group,
                   kv_heads=2, block_size=block_size, dtype=dtype, seed=seed)  # fmt: skip
    p.context_lens = torch.tensor(ctx_lens, dtype=torch.int32)  # 0: a padding row
    ref = decode_attention_ref(*p.decode_args(bound=4096))
    out = cpu.decode_attention_cpu(*p.decode_args(bound=4096))
    assert not out.isnan().any()
    assert rel_error(out, ref) < TOLERANCE[dtype]
    padding = p.context_lens == 0
    assert torch.equal(out[padding], torch.zeros_like(out[padding]))


@settings(max_examples=15, deadline=None)
@given(
    seqs=st.lists(st.tuples(st.integers(1, 40), st.integers(0, 40)), min_size=1, max_size=4),
    group=st.sampled_from([1, 2, 4]),
    block_size=st.sampled_from([16, 32]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_prefill_attention_matches_the_reference(seqs, group, block_size, dtype, seed):
    """(new tokens, tokens cached before them) per sequence: a fresh prompt (0 cached), a prefix
    hit or a later chunk; the unwritten slots hold NaN."""
    q_lens, ctx_lens = [n for n, _ in seqs], [n + c for n, c in seqs]
    p = make_paged(q_lens, ctx_lens, heads=2 * group, kv_heads=2, block_size=block_size,
                   dtype=dtype, seed=seed)  # fmt: skip
    ref = prefill_attention_ref(*p.prefill_args())
    out = cpu.prefill_attention_cpu(*p.prefill_args())
    assert out.dtype == ref.dtype and not out.isnan().any()
    assert rel_error(out, ref) < TOLERANCE[dtype]


def test_decode_attention_over_more_sequences_than_one_gather_takes():
    """Past GATHER_SEQS sequences the CPU path gathers and attends a slice at a time: every
    slice, its ragged contexts and a padding row among them, must still be the reference's."""
    g = torch.Generator().manual_seed(5)
    ctx = torch.randint(1, 90, (2 * cpu.GATHER_SEQS + 3,), generator=g).tolist()
    p = make_paged([1] * len(ctx), ctx, heads=4, kv_heads=2, block_size=16, seed=5)
    p.context_lens[cpu.GATHER_SEQS] = 0  # a padding row, first of the second slice
    ref = decode_attention_ref(*p.decode_args(bound=4096))
    out = cpu.decode_attention_cpu(*p.decode_args(bound=4096))
    assert rel_error(out, ref) < TOLERANCE[torch.float32]
    assert torch.equal(out[cpu.GATHER_SEQS], torch.zeros_like(out[0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 256), (5, 4, 64)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_matches_the_reference(dtype, shape, with_residual):
    g = torch.Generator().manual_seed(sum(shape))
    x, r = (torch.randn(*shape, generator=g).to(dtype) for _ in range(2))
    w = torch.randn(shape[-1], generator=g).to(dtype)
    residual = r if with_residual else None
    out, ref = cpu.rms_norm_cpu(x, w, 1e-6, residual), rms_norm_ref(x, w, 1e-6, residual)
    for o, e in zip(*((out, ref) if with_residual else ((out,), (ref,))), strict=True):
        assert o.dtype == e.dtype and rel_error(o, e) < TOLERANCE[dtype] / 10


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_and_qk_norm_rope_match_the_references(dtype):
    g = torch.Generator().manual_seed(1)
    q, k = (
        torch.randn(6, 4, 32, generator=g).to(dtype),
        torch.randn(6, 2, 32, generator=g).to(dtype),
    )
    positions = torch.tensor([0, 5, 9, 100, 3, 64])
    angles = torch.arange(128.0)[:, None] * (1e4 ** -(torch.arange(0, 32, 2) / 32))[None, :]
    cos, sin = angles.cos(), angles.sin()
    for out, ref in zip(cpu.rope_cpu(positions, q, k, cos, sin),
                        rope_ref(positions, q, k, cos, sin), strict=True):  # fmt: skip
        assert out.shape == ref.shape and rel_error(out, ref) < TOLERANCE[dtype] / 10
    wq, wk = torch.randn(32, generator=g).to(dtype), torch.randn(32, generator=g).to(dtype)
    args = (positions, q, k, wq, wk, 1e-6, cos, sin)
    for out, ref in zip(cpu.qk_norm_rope_cpu(*args), qk_norm_rope_ref(*args), strict=True):
        assert rel_error(out, ref) < TOLERANCE[dtype] / 10


@pytest.mark.parametrize("slots", [[7, 0, 31, 12], [7, -1, 31, -1]])
def test_store_kv_writes_the_same_slots_as_the_reference(slots):
    g = torch.Generator().manual_seed(2)
    k, v = torch.randn(4, 2, 8, generator=g), torch.randn(4, 2, 8, generator=g)
    caches = [torch.full((4, 8, 2, 8), float("nan")) for _ in range(4)]
    slot_mapping = torch.tensor(slots)
    cpu.store_kv_cpu(k, v, caches[0], caches[1], slot_mapping)
    store_kv_ref(k, v, caches[2], caches[3], slot_mapping)
    for mine, ref in zip(caches[:2], caches[2:], strict=True):
        assert torch.equal(mine.nan_to_num(-9), ref.nan_to_num(-9))


def test_auto_picks_the_cpu_path_on_cpu_and_the_name_works_too():
    assert get_backend("auto", "cpu") is CPU and get_backend("cpu", "cpu") is CPU
    with pytest.raises(ValueError, match="auto, torch, triton, cpu"):
        get_backend("fast", "cpu")


def test_the_engine_on_the_cpu_path_gives_the_references_greedy_tokens():
    prompts = ["def fib(n):", "class Stack:\n", "import os\n", "for i in range(", "x = [1, 2"]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    runs = {}
    for backend in (TORCH, CPU):
        llm = LLM(kernel_backend=backend, num_kv_blocks=24)  # few blocks: preemption too
        assert llm.kernels is backend
        runs[backend.name] = [o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert runs["cpu"] == runs["torch"]


def test_a_cpu_fp32_engine_stores_the_wide_projections_column_major(embedded_llm):
    from minirt.kernels.cpu import gemv_layout
    from minirt.model.loader import load_model

    layer = embedded_llm.model.model.layers[0]
    for linear in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj):
        assert linear.weight.stride() == (1, linear.weight.shape[0])  # column-major
    assert layer.mlp.down_proj.weight.is_contiguous()  # faster as it is
    fresh, _ = load_model(embedded_llm.model_path, torch.float32, torch.device("cpu"))
    x = torch.randn(3, fresh.config.hidden_size)
    before = [m.weight.clone() for m in fresh.modules() if isinstance(m, torch.nn.Linear)]
    assert gemv_layout(fresh) == 3 * fresh.config.num_hidden_layers
    after = [m.weight for m in fresh.modules() if isinstance(m, torch.nn.Linear)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))  # same values
    qkv = fresh.model.layers[0].self_attn.qkv_proj
    torch.testing.assert_close(qkv(x), x @ before[0].t())  # the product, summed in another order


def test_quantizing_a_cpu_engine_with_column_major_weights_works():
    from minirt.quant.linear import QuantLinear, quantize_model

    llm = LLM(device="cpu")
    quantize_model(llm, "w4a16-g32")
    assert isinstance(llm.model.model.layers[0].self_attn.qkv_proj, QuantLinear)
    assert llm.generate(["def f("], use_tqdm=False)[0].token_ids
