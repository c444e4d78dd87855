import pytest

from minirt.config import PRESETS, EngineConfig, ModelConfig
from minirt.sampling_params import SamplingParams


def test_qwen3_config_from_transformers_5_dict_reads_rope_parameters():
    c = ModelConfig.from_dict(
        {
            "model_type": "qwen3",
            "vocab_size": 10,
            "hidden_size": 8,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 4,
            "rope_parameters": {"rope_theta": 1234.0, "rope_type": "default"},
            "eos_token_id": 3,
        }
    )
    assert (c.rope_theta, c.qk_norm, c.head_dim, c.eos_token_id) == (1234.0, True, 4, [3])


def test_llama_config_defaults_head_dim_and_has_no_qk_norm():
    c = ModelConfig.from_dict(
        {
            "model_type": "llama",
            "vocab_size": 10,
            "hidden_size": 32,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "rope_theta": 500000.0,
        }
    )
    assert (c.head_dim, c.num_key_value_heads, c.qk_norm, c.rope_theta) == (8, 4, False, 5e5)


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"model_type": "gpt2"}, "not supported"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0}}, "yarn"),
        ({"use_sliding_window": True}, "sliding-window"),
    ],
)
def test_unsupported_configs_are_refused_with_a_reason(extra, match):
    base = {
        "model_type": "qwen3",
        "vocab_size": 10,
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_dict({**base, **extra})


def test_preset_parameter_counts_match_the_published_sizes():
    assert PRESETS["qwen3-0.6b"].num_parameters() == pytest.approx(0.596e9, rel=0.01)
    assert PRESETS["llama-3-8b"].num_parameters() == pytest.approx(8.03e9, rel=0.01)
    assert PRESETS["llama-3-70b"].num_parameters() == pytest.approx(70.6e9, rel=0.01)
    assert PRESETS["qwen3-30b-a3b"].num_parameters() == pytest.approx(30.5e9, rel=0.01)


def test_unknown_engine_argument_lists_the_valid_ones():
    with pytest.raises(TypeError, match="block_size"):
        EngineConfig.from_kwargs(blocksize=16)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": -2}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_invalid_sampling_params_raise_and_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preemption_mode": "evict"}, "'recompute' or 'swap'"),
        ({"swap_space_bytes": -1}, "swap_space_bytes"),
        ({"kernel_backend": "cuda-c"}, "kernel_backend"),
        ({"cuda_graph_sizes": [0, 8]}, "cuda_graph_sizes"),
        ({"piecewise_graph_sizes": [16, 0]}, "piecewise_graph_sizes"),
    ],
)
def test_invalid_engine_settings_raise_and_name_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EngineConfig.from_kwargs(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": float("nan")}, "temperature must be a finite number, got nan"),
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"top_p": float("nan")}, "top_p must be a finite number"),
        ({"top_k": 2.5}, "top_k must be an integer, got 2.5"),
        ({"seed": 2**64}, r"seed must be in \[0, 18446744073709551615\]"),
        ({"seed": -1}, r"seed must be in \[0, "),
        ({"seed": 1.5}, "seed must be an integer, got 1.5"),
        ({"seed": "x"}, "seed must be an integer, got 'x'"),
        ({"seed": True}, "seed must be an integer, got True"),
        ({"max_tokens": float("nan")}, "max_tokens must be an integer, got nan"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer, got 2.5"),
        ({"stop": [1]}, "stop must be a string or a list of strings"),
        ({"ignore_eos": "no"}, "ignore_eos must be True or False"),
    ],
)
def test_sampling_params_refuse_values_the_sampler_cannot_use_and_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_sampling_params_take_numpy_and_torch_integers_as_plain_ints():
    import numpy as np
    import torch

    p = SamplingParams(max_tokens=np.int64(5), seed=torch.tensor(7), top_k=np.int32(3))
    assert (p.max_tokens, p.seed, p.top_k) == (5, 7, 3)
    assert all(type(v) is int for v in (p.max_tokens, p.seed, p.top_k))
    assert SamplingParams(seed=2**64 - 1).seed == 2**64 - 1  # the largest torch accepts


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_model_len": 0}, "max_model_len must be >= 1, got 0"),
        ({"max_model_len": -5}, "max_model_len must be >= 1, got -5"),
        ({"max_model_len": 2.5}, "max_model_len must be an integer"),
        ({"block_size": 2.5}, "block_size must be an integer"),
        ({"block_size": 0}, "block_size must be >= 1"),
        ({"max_num_seqs": True}, "max_num_seqs must be an integer"),
        ({"kv_cache_bytes": float("nan")}, "kv_cache_bytes must be a finite number"),
        ({"gpu_memory_utilization": float("nan")}, "gpu_memory_utilization must be a finite"),
        ({"seed": 2**64}, "seed must be in"),
        ({"dtype": "bogus"}, "dtype must be one of .*'bfloat16'.*got 'bogus'"),
        ({"device": "bogus"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'bogus'"),
        ({"device": 0}, "device must be"),
        ({"cuda_graph_sizes": 8}, "cuda_graph_sizes must be a list"),
        ({"piecewise_graph_sizes": 512}, "piecewise_graph_sizes must be a list"),
    ],
)
def test_engine_settings_of_the_wrong_type_or_range_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EngineConfig.from_kwargs(**kwargs)


def test_engine_settings_take_numpy_ints_and_torch_dtypes():
    import numpy as np
    import torch

    c = EngineConfig(block_size=np.int64(8), max_model_len=np.int32(64), dtype=torch.float16)
    assert (c.block_size, c.max_model_len, c.dtype) == (8, 64, "float16")
    assert type(c.block_size) is int
