"""The decode GEMV and its two fusions against their PyTorch references; PDL in a CUDA graph."""

import pytest
import torch

from minirt.kernels import gemv as G
from minirt.kernels import lm_head
from minirt.kernels.pdl import launch_args

from .conftest import rel_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.on_gpu_too  # interpreted on a CPU, compiled on a GPU machine
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
BOUND = {torch.float32: 1e-5, torch.bfloat16: 1e-2}  # fp32 sums in another order; bf16 output


@pytest.fixture(autouse=True)
def _rows(monkeypatch):
    monkeypatch.setattr(G, "GEMV_MAX_ROWS", 4)


def _rand(*shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(DEVICE, DTYPE)


# K a power of two or not (rows padded in registers), N not a multiple of BLOCK_N
SHAPES = [(1, 48, 64), (2, 40, 96), (3, 8, 384), (4, 72, 256)]


@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_the_gemv_matches_f_linear(m, n, k, bias):
    x, w = _rand(m, k, seed=k), _rand(n, k, seed=n, scale=k**-0.5)
    b = _rand(n, seed=1) if bias else None
    out = G.linear(x, w, b)
    assert out.shape == (m, n) and out.dtype == DTYPE
    assert rel_error(out, G.linear_ref(x, w, b)) < BOUND[DTYPE]
    for r in range(m):  # each row's outputs in its own row
        assert rel_error(out[r], G.linear_ref(x[r : r + 1], w, b)[0]) < BOUND[DTYPE]


@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
def test_silu_mul_is_computed_while_the_gate_up_row_is_read(m, n, k):
    gate_up, w = _rand(m, 2 * k, seed=k + 1), _rand(n, k, seed=n + 1, scale=k**-0.5)
    out = G.silu_mul_linear(gate_up, w)
    assert rel_error(out, G.silu_mul_linear_ref(gate_up, w)) < BOUND[DTYPE]


@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_add_and_rms_norm_are_done_by_every_program_and_the_residual_written_once(
    m, n, k, with_residual
):
    x, w = _rand(m, k, seed=k + 2), _rand(n, k, seed=n + 2, scale=k**-0.5)
    residual = _rand(m, k, seed=3) if with_residual else None
    norm_w = (torch.rand(k, generator=torch.Generator().manual_seed(4)) + 0.5).to(DEVICE, DTYPE)
    y, res = G.rms_norm_linear(x, residual, norm_w, 1e-6, w)
    y_ref, res_ref = G.rms_norm_linear_ref(x, residual, norm_w, 1e-6, w)
    assert rel_error(y, y_ref) < BOUND[DTYPE]
    assert torch.equal(res, res_ref)  # the same add in the same dtype: exactly the reference's


@pytest.mark.parametrize(("m", "n", "k"), [(1, 700, 64), (2, 37, 96), (1, 16, 32)])
@pytest.mark.parametrize("chunk", [G.ARGMAX_BLOCK, 4])  # 4: the argmax reads its maxima in chunks
def test_the_lm_head_gemv_takes_the_argmax_of_the_logits_it_stores(monkeypatch, m, n, k, chunk):
    """Each program's largest logit (as stored, rounded) and one small kernel over those: the
    argmax of the logits themselves, ties to the first index, also across programs and
    chunks."""
    monkeypatch.setattr(G, "ARGMAX_BLOCK", chunk)
    x, w = _rand(m, k, seed=k + 5), _rand(n, k, seed=n + 5, scale=k**-0.5)
    y, tokens = G.linear_argmax(x, w)
    y_ref, _ = G.linear_argmax_ref(x, w)
    assert rel_error(y, y_ref) < BOUND[DTYPE]
    assert tokens.dtype == torch.int64 and torch.equal(tokens, y.argmax(-1))
    tie = w.clone()
    tie[n // 2] = tie[n - 1] = x[0] * 8  # two rows of W give the same, largest logit
    y, tokens = G.linear_argmax(x, tie)
    assert tokens[0].item() == n // 2 and torch.equal(tokens, y.argmax(-1))


def test_more_rows_than_the_gemv_takes_go_to_f_linear_unchanged():
    x, w = _rand(5, 64, seed=5), _rand(24, 64, seed=6)
    assert not G.use_gemv(x, w) and G.use_gemv(x[:4], w)
    assert torch.equal(G.linear(x, w), G.linear_ref(x, w))
    assert not G.use_gemv(x[:1], w.t().contiguous().t())  # column-major W: cuBLAS
    assert not G.use_gemv(x[:1].double(), w)  # dtypes differ


def test_the_tiles_hold_a_fixed_number_of_weights_and_fill_an_h100_on_qwen3_shapes():
    programs = {}
    for name, (n, k) in {"qkv": (4096, 1024), "o": (1024, 2048), "gate_up": (6144, 1024),
                         "down": (1024, 3072)}.items():  # fmt: skip
        c = G.gemv_config(n, k)
        assert c["BLOCK_N"] * c["BLOCK_K"] <= G.TILE and c["BLOCK_K"] >= k
        programs[name] = -(-n // c["BLOCK_N"])
    assert programs == {"qkv": 256, "o": 128, "gate_up": 384, "down": 256}


def test_pdl_is_asked_for_only_on_a_hopper_gpu_outside_the_interpreter():
    assert launch_args(torch.zeros(1)) == {"PDL": 0}
    if DEVICE == "cuda":
        hopper = torch.cuda.get_device_capability()[0] >= 9
        assert launch_args(torch.zeros(1, device="cuda")).get("launch_pdl", False) == hopper


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_chain_of_pdl_kernels_replayed_from_a_cuda_graph_reads_each_kernel_s_output():
    """norm + qkv-sized GEMV -> GEMV -> silu-mul GEMV, each launched to overlap the one before
    (on Hopper): replayed on new inputs, every stage sees its predecessor's finished output."""
    k, hidden = 256, 128  # x [1, hidden] -> [1, 2k] -> [1, 2k] (a gate_up row) -> [1, hidden]
    w1, w2 = _rand(2 * k, hidden, seed=7, scale=0.09), _rand(2 * k, 2 * k, seed=8, scale=0.04)
    w3, norm_w = _rand(hidden, k, seed=9, scale=0.06), _rand(hidden, seed=10).abs() + 0.5
    x, res = _rand(1, hidden, seed=11), _rand(1, hidden, seed=12)

    def chain(x, res):
        h, new_res = G.rms_norm_linear(x, res, norm_w, 1e-6, w1)
        return G.silu_mul_linear(G.linear(h, w2), w3), new_res

    def chain_ref(x, res):
        h, new_res = G.rms_norm_linear_ref(x, res, norm_w, 1e-6, w1)
        return G.silu_mul_linear_ref(G.linear_ref(h, w2), w3), new_res

    chain(x, res)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, new_res = chain(x, res)
    for seed in range(3):
        x.copy_(_rand(1, hidden, seed=20 + seed))
        res.copy_(_rand(1, hidden, seed=30 + seed))
        graph.replay()
        ref, ref_res = chain_ref(x, res)
        assert rel_error(out, ref) < 2 * BOUND[DTYPE] and torch.equal(new_res, ref_res)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_engine_gives_the_same_greedy_tokens_with_and_without_the_gemv(monkeypatch):
    """fp32 embedded model on the GPU, batches of 1 and 2 (graphed decode): GEMVs with their
    fused norm and SiLU against cuBLAS and the separate kernels, token for token."""
    from minirt import LLM, SamplingParams

    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    outs = []
    for rows in (2, 0):
        monkeypatch.setattr(G, "GEMV_MAX_ROWS", rows)
        llm = LLM(device="cuda", dtype="float32", kv_cache_bytes=32 << 20)
        outs.append([[o.token_ids for o in llm.generate(p, params, use_tqdm=False)]
                     for p in (prompts[:1], prompts)])  # fmt: skip
        del llm
    assert outs[0] == outs[1]


def test_norm_linear_fuses_a_plain_linear_and_calls_a_watched_one():
    """A hook on the projection (calibration: minirt.quant) must see its input: with one, the
    norm and the projection run apart, with the same results."""
    from dataclasses import replace

    from minirt.kernels.backend import TRITON
    from minirt.model.layers import Linear, RMSNorm, norm_linear

    calls, seen = [], []

    def fused(*args):
        calls.append(1)
        return G.rms_norm_linear_ref(*args)

    norm, linear = RMSNorm(64, 1e-6), Linear(64, 32)
    norm.kernels = linear.kernels = replace(TRITON, rms_norm_linear=fused)
    norm, linear = norm.to(DEVICE, DTYPE), linear.to(DEVICE, DTYPE)
    x, residual = _rand(1, 64, seed=13), _rand(1, 64, seed=14)
    y, res = norm_linear(norm, linear, x, residual)
    handle = linear.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    y_watched, res_watched = norm_linear(norm, linear, x, residual)
    handle.remove()
    assert calls == [1] and seen == [(1, 64)]
    assert rel_error(y_watched, y) < BOUND[DTYPE] and torch.equal(res_watched, res)


def test_replacing_linear_drops_the_fusions_that_would_skip_it():
    from dataclasses import replace

    from minirt.kernels.backend import TRITON, get_backend

    mine = get_backend(replace(TRITON, name="mine", linear=G.linear_ref), "cpu")
    assert mine.silu_mul_linear is None and mine.rms_norm_linear is None
    kept = get_backend(replace(TRITON, name="mine", decode_attention=lambda *a: None), "cpu")
    assert kept.silu_mul_linear is G.silu_mul_linear and kept.rms_norm_linear is G.rms_norm_linear


def test_the_lm_head_runs_on_the_backends_linear_and_is_still_tied():
    """The LM head is a `Linear` too (the GEMV at one or two rows on the GPU): a learner's
    `linear` sees its weight, which is still the embedding's, and the tokens do not change."""
    from dataclasses import replace

    from minirt import LLM, SamplingParams
    from minirt.kernels.backend import TORCH

    shapes = []

    def counting(x, weight, bias=None):
        shapes.append(tuple(weight.shape))
        return G.linear_ref(x, weight, bias)

    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    plain = LLM(device="cpu", kernel_backend="torch").generate([[5, 6, 7]], params, use_tqdm=False)
    llm = LLM(device="cpu", kernel_backend=replace(TORCH, name="count", linear=counting))
    ours = llm.generate([[5, 6, 7]], params, use_tqdm=False)
    mc = llm.model_config
    assert (
        shapes.count((mc.vocab_size, mc.hidden_size)) == 4
    )  # once a forward: 1 prefill, 3 decodes
    assert llm.model.lm_head.weight is llm.model.model.embed_tokens.weight
    assert ours[0].token_ids == plain[0].token_ids


def test_the_lm_head_takes_the_argmax_in_its_kernel_unless_watched_or_replaced():
    """Triton's backend fuses the argmax into the head's kernel (the GEMV, and the tensor-core
    head up to lm_head.MAX_ROWS rows where that is on); a hook on the head (it must see its
    call) or a learner's `linear` turns that off, with the same logits and tokens."""
    from dataclasses import replace

    from minirt import LLM
    from minirt.kernels.backend import TRITON

    model = LLM(device=DEVICE, kernel_backend="triton", dtype="float32").model
    hidden = _rand(2, model.config.hidden_size, seed=15).float()
    top = max(G.GEMV_MAX_ROWS, lm_head.MAX_ROWS)
    assert model.argmax_in_head(G.GEMV_MAX_ROWS) and not model.argmax_in_head(top + 1)
    logits, tokens = model.logits_and_argmax(hidden)
    seen = []
    handle = model.lm_head.register_forward_hook(lambda *a: seen.append(1))
    assert not model.argmax_in_head(1)
    watched_logits, watched_tokens = model.logits_and_argmax(hidden)
    handle.remove()
    assert seen == [1] and torch.equal(watched_tokens, tokens)
    assert rel_error(watched_logits, logits) < BOUND[torch.float32]
    model.use_kernels(replace(TRITON, name="mine", linear=G.linear_ref, linear_argmax=None))
    assert not model.argmax_in_head(1)


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize(("m", "n", "k"), [(1, 48, 64), (2, 40, 96), (3, 8, 384)])
@pytest.mark.parametrize("prologue", ["none", "norm", "norm+residual", "silu_mul"])
def test_the_8bit_gemv_makes_each_rows_codes_after_its_prologue(fmt, m, n, k, prologue):
    """W8A8 in the GEMV: the row computed as the bf16 GEMV computes it (SiLU·mul, or add +
    RMSNorm), then its own scale and codes (one outlier sets the scale), the products of codes,
    the scales at the end: what the references compute one step at a time."""
    from minirt.quant.formats import quantize_fp8, quantize_int8

    w = _rand(n, k, seed=n + 5, scale=k**-0.5).float().cpu()
    q = quantize_fp8(w) if fmt == "fp8" else quantize_int8(w)
    codes, w_scale = q.data.to(DEVICE), q.scales.to(DEVICE)
    x = _rand(m, 2 * k if prologue == "silu_mul" else k, seed=k + 6)
    x[:, 3] *= 20  # an outlier: the row's scale is set by it
    kw = {"silu_mul": True} if prologue == "silu_mul" else {}
    if prologue.startswith("norm"):
        norm_w = (torch.rand(k, generator=torch.Generator().manual_seed(7)) + 0.5).to(DEVICE, DTYPE)
        kw["norm"] = (norm_w, 1e-6)
    if prologue == "norm+residual":
        kw["residual"] = _rand(m, k, seed=8)
    bias = _rand(n, seed=9) if k == 96 else None
    y, stream = G.scaled_linear(x, codes, w_scale, bias, **kw)
    y_ref, stream_ref = G.scaled_linear_ref(x, codes, w_scale, bias, **kw)
    assert y.shape == (m, n) and y.dtype == DTYPE
    assert rel_error(y, y_ref) < BOUND[DTYPE]
    assert torch.equal(stream, stream_ref)  # x + residual with a residual, else x itself
    with pytest.raises(ValueError, match="scaled_gemm_dynamic"):
        G.scaled_linear(_rand(G.GEMV_MAX_ROWS + 1, k, seed=1), codes, w_scale)


def test_the_8bit_gemv_takes_only_layers_quantizing_activations_on_the_fly():
    """fp8-dynamic and int8 layers run their prologue in the fused GEMV (`quant_prologue`); a
    static or smoothed one, a watched one (calibration) and too many rows keep the QuantLinear
    call; a w4a16 layer's kernels take no prologue."""
    from minirt.model.layers import quant_prologue
    from minirt.quant.linear import QuantLinear

    linear = torch.nn.Linear(64, 32, bias=False)
    x, amax = _rand(1, 64, seed=10), torch.ones(64)
    norm = (torch.ones(64, device=DEVICE, dtype=DTYPE), 1e-6)
    methods = ("fp8-dynamic", "int8", "w4a16-g32", "fp8-static", "int8-smooth")
    layers = {m: QuantLinear.from_linear(linear, m, amax).to(DEVICE) for m in methods}
    fused = {m for m, q in layers.items() if quant_prologue(q, x, norm=norm) is not None}
    assert fused == {"fp8-dynamic", "int8"}
    codes, scales = layers["int8"].gemv_codes(x)
    assert codes is layers["int8"].qweight and scales is layers["int8"].scales
    y, stream = quant_prologue(layers["int8"], x, norm=norm)
    assert torch.equal(y, G.scaled_linear(x, codes, scales, norm=norm)[0]) and stream is x
    assert quant_prologue(layers["int8"], _rand(G.GEMV_MAX_ROWS + 1, 64, seed=11)) is None
    layers["int8"].register_forward_pre_hook(lambda *a: None)
    assert quant_prologue(layers["int8"], x) is None


@pytest.mark.parametrize("method", ["fp8-dynamic", "int8"])
def test_the_engine_fuses_norm_and_silu_into_the_8bit_gemv_with_the_same_tokens(
    qwen3_checkpoint, monkeypatch, method
):
    """A quantized engine at one and two rows: the norms and SiLU·mul inside the 8-bit GEMV
    give the tokens of the separate kernels and the QuantLinear call (GEMV_MAX_ROWS = 0)."""
    from minirt import LLM, SamplingParams

    folder, _ = qwen3_checkpoint
    prologues, real = [], G.scaled_linear

    def spy(*args, **kw):
        prologues.append("silu_mul" if kw.get("silu_mul") else "norm")
        return real(*args, **kw)

    monkeypatch.setattr(G, "scaled_linear", spy)
    prompts = [list(range(40, 60)), [7, 8, 9, 10, 11]]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    kw = dict(device=DEVICE, dtype="float32", quantization=method, kv_cache_bytes=16 << 20)
    outs = []
    for rows in (2, 0):
        monkeypatch.setattr(G, "GEMV_MAX_ROWS", rows)
        llm = LLM(folder, kernel_backend="triton", **kw)
        outs.append([[o.token_ids for o in llm.generate(p, params, use_tqdm=False)]
                     for p in (prompts[:1], prompts)])  # fmt: skip
        del llm
        if rows:
            assert {"norm", "silu_mul"} <= set(prologues)
            prologues.clear()
    assert prologues == [] and outs[0] == outs[1]
