"""QuantLinear matches nn.Linear within each method's error; a quantized model still works."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minirt.engine.llm import LLM
from minirt.model.layers import PackedLinear
from minirt.quant.linear import (
    METHODS,
    QuantLinear,
    load_quantized,
    quantize_model,
    save_quantized,
    target_linears,
)
from minirt.sampling_params import SamplingParams

# Relative Frobenius error of y on random inputs; measured 0.072 / 0.068 / 0.066 (int4),
# 0.036 (fp8), 0.0075 / 0.0069 (int8) with seed 0. Bounds keep ~1.5x room.
REL_ERROR = {
    "w4a16-g128": 0.11,
    "w4a16-g32": 0.10,
    "w4a16-g128-asym": 0.10,
    "fp8-dynamic": 0.055,
    "fp8-static": 0.055,
    "int8": 0.012,
    "int8-smooth": 0.012,
}
# Held-out text: the first bytes of the stdlib's codecs.py (a held-out file of the embedded
# model's corpus). Measured nats/byte: fp32 0.876 over 2,000 bytes; ratios quantized/fp32 over
# the same 2,000 bytes: w4a16-g128 1.043, -g32 1.036, -g128-asym 1.006, fp8-dynamic 1.004,
# fp8-static 1.005, int8 1.001, int8-smooth 1.001. The test scores the first 512 bytes (CPU time).
HELD_OUT = Path(codecs.__file__).read_bytes()[:512].decode("utf-8", "ignore")
CALIBRATION = [Path(torch.__file__).read_bytes()[:400].decode("utf-8", "ignore")]
PPL_RATIO_BOUND = {"w4a16-g32": 1.10, "int8": 1.03}


def test_method_table_matches_the_tolerances():
    assert set(METHODS) == set(REL_ERROR)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_quant_linear_is_close_to_nn_linear(method):
    torch.manual_seed(0)
    lin = nn.Linear(256, 96, bias=True)
    x = torch.randn(2, 8, 256)  # leading dims are kept
    amax = x.reshape(-1, 256).abs().amax(0)
    q = QuantLinear.from_linear(lin, method, amax)
    y, ref = q(x), lin(x)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert (y - ref).norm() / ref.norm() < REL_ERROR[method]


def test_quant_linear_keeps_the_input_dtype_and_packed_parts():
    packed = PackedLinear(64, {"q_proj": 64, "k_proj": 32, "v_proj": 32}).to(torch.bfloat16)
    q = QuantLinear.from_linear(packed, "w4a16-g32")
    assert q(torch.randn(3, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert q.part("k_proj") == packed.part("k_proj") == slice(64, 96)


def nats_per_byte(llm: LLM, text: str) -> float:
    toks = llm.tokenizer.encode(text)  # byte-level: one token per byte
    logits = llm.score(toks)
    return F.cross_entropy(logits[:-1], torch.tensor(toks[1:])).item()


@pytest.fixture
def restore(llm):
    """Put the full-precision projections back after a test quantizes the shared engine."""
    originals = target_linears(llm.model)
    yield
    for name, linear in originals.items():
        parent, _, child = name.rpartition(".")
        setattr(llm.model.get_submodule(parent), child, linear)


def test_quantize_model_replaces_only_decoder_projections(llm, restore):
    quantize_model(llm, "int8")
    names = {n for n, m in llm.model.named_modules() if isinstance(m, QuantLinear)}
    assert len(names) == 4 * llm.model_config.num_hidden_layers
    assert not any("lm_head" in n or "embed" in n for n in names)
    assert isinstance(llm.model.lm_head, nn.Linear)


def test_quantized_perplexity_stays_near_full_precision(llm, restore):
    base = nats_per_byte(llm, HELD_OUT)
    for method, bound in PPL_RATIO_BOUND.items():
        restore_to = target_linears(llm.model)
        quantize_model(llm, method)
        assert nats_per_byte(llm, HELD_OUT) <= bound * base, method
        for name, linear in restore_to.items():
            parent, _, child = name.rpartition(".")
            setattr(llm.model.get_submodule(parent), child, linear)


def test_quantized_model_still_generates_greedily(llm, restore):
    params = SamplingParams(max_tokens=12, temperature=0.0)
    quantize_model(llm, "int8-smooth", calibration=CALIBRATION)
    out = llm.generate(["def fib(n):"], params)[0]
    assert len(out.token_ids) == 12


def test_save_load_round_trip_is_bit_exact(llm, restore, tmp_path):
    quantize_model(llm, "w4a16-g128-asym")
    path = save_quantized(llm, tmp_path)
    assert path.suffix == ".safetensors" and not list(tmp_path.glob("*.pt"))
    fresh = LLM(device="cpu")
    load_quantized(fresh, tmp_path)
    want, got = llm.model.state_dict(), fresh.model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) and want[k].dtype == got[k].dtype for k in want)
    x = torch.randn(5, llm.model_config.hidden_size)
    layer = "model.layers.0.mlp.gate_up_proj"
    assert torch.equal(llm.model.get_submodule(layer)(x), fresh.model.get_submodule(layer)(x))


def test_a_version_1_checkpoint_in_gptq_order_loads_as_the_same_weights(llm, restore, tmp_path):
    """Version 1 files stored int4 words in GPTQ order; load_quantized repacks them."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from minirt.quant import formats as Q

    quantize_model(llm, "w4a16-g32")
    path = save_quantized(llm, tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    for k in [k for k in tensors if k.endswith("qweight")]:  # back to GPTQ order, as v1 wrote
        codes = Q.interleave_columns(Q.unpack_int4(tensors[k]), 32, inverse=True)
        tensors[k] = Q.pack_int4(codes)
    save_file(tensors, str(path), metadata={**meta, "version": "1"})
    fresh = load_quantized(LLM(device="cpu"), tmp_path)
    layer = "model.layers.1.self_attn.o_proj"
    want = llm.model.get_submodule(layer).dequantized_weight()
    assert torch.equal(fresh.get_submodule(layer).dequantized_weight(), want)


def test_fp8_static_round_trip_keeps_the_calibrated_scale(llm, restore, tmp_path):
    quantize_model(llm, "fp8-static", calibration=CALIBRATION)
    scale = llm.model.get_submodule("model.layers.0.self_attn.o_proj").input_scale
    assert scale.ndim == 0 and scale > 0
    save_quantized(llm, tmp_path)
    fresh = load_quantized(LLM(device="cpu"), tmp_path)
    assert torch.equal(fresh.get_submodule("model.layers.0.self_attn.o_proj").input_scale, scale)


def test_bad_inputs_raise_clear_errors(llm, tmp_path):
    with pytest.raises(ValueError, match="unknown quantization method 'w3'"):
        quantize_model(llm, "w3")
    with pytest.raises(ValueError, match="needs calibration"):
        quantize_model(llm, "fp8-static")
    with pytest.raises(ValueError, match="no QuantLinear"):
        save_quantized(llm, tmp_path)
    with pytest.raises(FileNotFoundError, match="save_quantized"):
        load_quantized(llm, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not divisible by group_size"):
        QuantLinear.from_linear(nn.Linear(200, 8), "w4a16-g128")


def test_a_method_of_ones_own_functions_runs_in_every_projection_once_per_token():
    """int4_method: the quantizer, packer and GEMV given (here minirt's formats and a GEMV in
    PyTorch) quantize every decoder projection and multiply each token; the model then scores
    as minirt's own method of the same group size does (the same codes, another sum order)."""
    from minirt.quant import formats as Q
    from minirt.quant.linear import int4_method

    calls = []

    def quantize(w, group_size):
        q = Q.quantize_int4(w, group_size)
        return Q.unpack_int4(q.packed), q.scales

    def gemv(x, packed, scales, zeros, group_size):  # x [in] -> [out]
        calls.append(tuple(x.shape))
        shape = (packed.shape[0], packed.shape[1] * 8)
        return Q.dequantize_int4(Q.Int4Weight(packed, scales, zeros, shape, group_size)) @ x

    text = HELD_OUT[:24]
    mine = LLM("draft", device="cpu", quantization=int4_method(quantize, Q.pack_int4, gemv, 32))
    ref = LLM("draft", device="cpu", quantization="w4a16-g32")
    layers = [m for m in mine.model.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == len(target_linears(LLM("draft", device="cpu").model)) == 12
    torch.testing.assert_close(mine.score(text), ref.score(text), rtol=1e-4, atol=1e-4)
    assert len(calls) == len(layers) * len(mine.tokenizer.encode(text))
    assert json.loads(json.dumps(mine.config.to_dict()))["quantization"] == "w4a16-yours"
    asym = int4_method(quantize, Q.pack_int4, gemv, 32, symmetric=False)
    with pytest.raises(ValueError, match=r"quantize returned 2 values; \(codes, scales, zeros\)"):
        LLM("draft", device="cpu", quantization=asym)


def test_a_model_quantized_with_ones_own_functions_is_not_saved(tmp_path):
    from minirt.quant import formats as Q
    from minirt.quant.linear import int4_method

    def quantize(w, group_size):
        q = Q.quantize_int4(w, group_size)
        return Q.unpack_int4(q.packed), q.scales

    mine = LLM("draft", device="cpu", quantization=int4_method(quantize, Q.pack_int4, None, 32))
    with pytest.raises(ValueError, match="'w4a16-yours', a method of your own functions"):
        save_quantized(mine, tmp_path)
