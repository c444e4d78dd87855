"""Read a Hugging Face `config.json` into ModelConfig's fields, refusing what minirt can't run.

Sizes must be positive integers and consistent (heads a multiple of KV heads); a setting that
changes the math minirt implements (another activation, scaled RoPE, sliding-window layers, MLP
biases) is refused by name instead of silently ignored. Notebook 00 (tour) prints the result
(`llm.model_config`); notebook 01 (KV cache) sizes the pool from these fields.
"""

from __future__ import annotations

from typing import Any

from minirt.checks import as_float, as_int

# model_type -> (q/k RMSNorm per head, bias on q/k/v projections)
ARCHITECTURES = {"qwen3": (True, False), "qwen2": (False, True), "llama": (False, False)}
_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")
# More positions than any supported checkpoint has; the RoPE table built at load holds 4 bytes x
# head_dim per position (2 GiB here at head_dim 128), so a typo of 10**9 must not reach it.
MAX_POSITIONS = 2**22
_SILU = ("silu", "swish")  # transformers' ACT2FN maps both to SiLU


def model_config_fields(hf: Any) -> dict[str, Any]:
    """ModelConfig keyword arguments for the config dict `hf`; ValueError naming a bad field."""
    if not isinstance(hf, dict):
        raise ValueError(f"config.json must hold a JSON object, got a {type(hf).__name__}")
    model_type = hf.get("model_type", "")
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"model_type {model_type!r} is not supported; minirt runs "
            f"{sorted(ARCHITECTURES)} (Llama-style decoders). Pick such a checkpoint."
        )
    refuse_unimplemented(hf)
    sizes = {name: as_int(name, _required(hf, name), 1) for name in _SIZES}
    heads = as_int("num_attention_heads", _required(hf, "num_attention_heads"), 1)
    kv_heads = as_int("num_key_value_heads", hf.get("num_key_value_heads") or heads, 1)
    if heads % kv_heads:
        raise ValueError(
            f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads "
            f"({kv_heads}): each KV head serves a whole group of query heads"
        )
    head_dim = hf.get("head_dim")
    if head_dim is None and sizes["hidden_size"] % heads:
        raise ValueError(
            f"config.json has no head_dim and hidden_size ({sizes['hidden_size']}) is not a "
            f"multiple of num_attention_heads ({heads}); add head_dim"
        )
    head_dim = as_int("head_dim", head_dim or sizes["hidden_size"] // heads, 1)
    qk_norm, bias = ARCHITECTURES[model_type]
    rope = hf.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    return {
        "model_type": model_type,
        **sizes,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": as_float("rms_norm_eps", hf.get("rms_norm_eps", 1e-6), 0.0),
        "rope_theta": as_float("rope_theta", theta, 1.0),
        "max_position_embeddings": as_int(
            "max_position_embeddings",
            hf.get("max_position_embeddings", 4096),
            1,
            MAX_POSITIONS,
            hint="; the RoPE table is built for every position at load, lower it in config.json",
        ),
        "tie_word_embeddings": _flag(hf, "tie_word_embeddings", False),
        "qk_norm": qk_norm,
        "attention_bias": _flag(hf, "attention_bias", bias),
        "eos_token_id": _eos_ids(hf.get("eos_token_id")),
        "dtype": str(hf.get("dtype") or hf.get("torch_dtype") or "float32"),
    }


def refuse_unimplemented(hf: dict) -> None:
    """Raise for a setting that would change the math of minirt's decoder if it were honoured."""
    act = hf.get("hidden_act", "silu")
    if act not in _SILU:
        raise ValueError(
            f"hidden_act {act!r} is not implemented: minirt's MLP is SwiGLU with silu. "
            "Use a checkpoint whose hidden_act is 'silu'"
        )
    # transformers 5 keeps rope settings in "rope_parameters"; older files in "rope_scaling".
    for name in ("rope_parameters", "rope_scaling"):
        rope = hf.get(name)
        if rope is None:
            continue
        kind = (
            rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else rope
        )
        if kind != "default":
            raise ValueError(
                f"{name} has rope_type {kind!r}, which is not implemented (only plain RoPE); "
                f"use a checkpoint without rope scaling or set {name} to null in config.json"
            )
    if hf.get("use_sliding_window"):
        raise ValueError("sliding-window attention is not supported; set use_sliding_window=false")
    layer_types = hf.get("layer_types") or []
    other = [(i, t) for i, t in enumerate(layer_types) if t != "full_attention"]
    if other:
        i, kind = other[0]
        raise ValueError(
            f"layer_types[{i}] is {kind!r} ({len(other)} of {len(layer_types)} layers): minirt "
            "runs only 'full_attention' layers (no sliding windows); use a checkpoint without them"
        )
    if hf.get("mlp_bias"):
        raise ValueError("mlp_bias=true is not implemented (minirt's MLP has no biases)")


def _required(hf: dict, name: str) -> Any:
    if name not in hf:
        raise ValueError(f"{name!r} is missing; is this a decoder's Hugging Face config?")
    return hf[name]


def _flag(hf: dict, name: str, default: bool) -> bool:
    value = hf.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _eos_ids(eos: Any) -> list[int]:
    if eos is None:
        return []
    ids = eos if isinstance(eos, list) else [eos]
    return [as_int("eos_token_id", t, 0) for t in ids]
