import pytest
import torch

from minirt import LLM, SamplingParams
from minirt.quant.linear import QuantLinear, quantize_model

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)


def test_llm_quantization_equals_quantizing_the_loaded_model():
    """LLM(quantization=m) quantizes at load, before the pool and the graphs: the same layers,
    so the same greedy tokens, as quantize_model on an unquantized LLM afterwards."""
    # two engines in one process: a fixed KV budget each (on a GPU the first would otherwise
    # take most of the free memory and leave the second none)
    at_load = LLM(quantization="w4a16-g128", kv_cache_bytes=32 << 20)
    after = LLM(kv_cache_bytes=32 << 20)
    quantize_model(after, "w4a16-g128")
    layers = [m for m in at_load.model.modules() if isinstance(m, QuantLinear)]
    assert layers and all(m.method.name == "w4a16-g128" for m in layers)
    a = at_load.generate(["def fib(n):"], GREEDY, use_tqdm=False)[0].token_ids
    b = after.generate(["def fib(n):"], GREEDY, use_tqdm=False)[0].token_ids
    assert a == b


def test_methods_that_need_calibration_are_refused_at_load_with_what_to_do():
    with pytest.raises(ValueError, match=r"needs calibration data.*quantize_model"):
        LLM(quantization="fp8-static")
    with pytest.raises(ValueError, match="unknown quantization method 'int3'"):
        LLM(quantization="int3")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["w4a16-g128", "w4a16-g32", "fp8-dynamic", "fp8-static", "int8"])
def test_cuda_kernels_compute_what_the_reference_path_does(method):
    """On CUDA QuantLinear runs the Triton kernels (w4a16_gemm, scaled_gemm); on the CPU the
    reference path. Same layer, same input: the same output up to bf16 rounding."""
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(256, 96, bias=True)
    torch.nn.init.normal_(linear.weight, std=0.05, generator=g)
    x = torch.randn(24, 256, generator=g)
    q = QuantLinear.from_linear(linear, method, act_amax=x.abs().amax(0))
    ref = q(x)  # CPU: the reference path, fp32
    q = q.cuda()
    for rows in (24, 2, 1):  # 1-2 rows: the decode GEMV (fp8-dynamic, int8), else the GEMMs
        out = q(x[:rows].cuda().bfloat16()).float().cpu()
        assert ((out - ref[:rows]).norm() / ref[:rows].norm()).item() < 2e-2
