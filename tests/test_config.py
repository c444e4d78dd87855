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
    ],
)
def test_invalid_engine_settings_raise_and_name_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EngineConfig.from_kwargs(**kwargs)
