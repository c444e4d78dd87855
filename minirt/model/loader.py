"""Find a checkpoint and load its weights with safetensors — never by unpickling.

`resolve_model_path` turns None / "target" / "draft" into the embedded models and checks a local
folder; `load_model` builds the decoder and copies tensors name for name (sharded index
included). minirt never downloads: a hub id gets told how to fetch it yourself.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from minirt.config import ModelConfig
from minirt.model.decoder import CausalLM
from minirt.model.embedded import DRAFT_DIR, TARGET_DIR
from minirt.model.layers import PackedLinear

EMBEDDED = {"target": TARGET_DIR, "draft": DRAFT_DIR}
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def resolve_model_path(model: str | Path | None) -> Path:
    """None means the embedded target; 'target'/'draft' name the embedded pair."""
    if model is None or str(model) in EMBEDDED:
        return EMBEDDED[str(model or "target")]
    path = Path(model).expanduser()
    if not path.exists():
        hint = ""
        if "/" in str(model) and not str(model).startswith((".", "/", "~")):
            hint = (
                f" It looks like a Hugging Face hub id: minirt never downloads. Fetch it yourself "
                f"(`huggingface-cli download {model} --local-dir DIR`) and pass DIR."
            )
        raise FileNotFoundError(
            f"model path {str(model)!r} does not exist.{hint} Pass a local checkpoint folder "
            "(config.json + *.safetensors + tokenizer.json), 'target'/'draft', or None for the "
            "embedded default."
        )
    if not path.is_dir():
        raise NotADirectoryError(f"model path {str(path)!r} is a file; pass its folder")
    return path


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder: the index's shards, or every *.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shards = set(weight_map.values())
        except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{index} is not a safetensors index ({type(e).__name__}: {e}); it must be JSON "
                'with a "weight_map" of tensor name -> shard file. Copy it from the checkpoint'
            ) from None
        files = [folder / str(f) for f in sorted(shards, key=str)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shards that are missing: {missing}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for pattern in _PICKLES for p in folder.glob(pattern))
    if pickles:
        raise ValueError(
            f"{folder} holds only pickle checkpoints ({', '.join(pickles)}); minirt refuses to "
            "unpickle (it can run arbitrary code). Convert to safetensors first, e.g. "
            "`AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR2)` in transformers."
        )
    raise FileNotFoundError(f"{folder} has no *.safetensors weights; is it a checkpoint folder?")


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Hugging Face checkpoint of `config` holds, name -> shape, from the config
    alone: the checkpoint is checked against it before a byte of the model is allocated."""
    c = config
    h, v, inter, d = c.hidden_size, c.vocab_size, c.intermediate_size, c.head_dim
    q, kv = c.num_attention_heads * d, c.num_key_value_heads * d
    attn = {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q)}
    mlp = {"gate_proj": (inter, h), "up_proj": (inter, h), "down_proj": (h, inter)}
    layer = {"input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,)}
    layer |= {f"self_attn.{name}.weight": shape for name, shape in attn.items()}
    layer |= {f"mlp.{name}.weight": shape for name, shape in mlp.items()}
    if c.attention_bias:
        layer |= {"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,)}
        layer |= {"self_attn.v_proj.bias": (kv,)}
    if c.qk_norm:
        layer |= {"self_attn.q_norm.weight": (d,), "self_attn.k_norm.weight": (d,)}
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (v, h)
    for i in range(c.num_hidden_layers):
        shapes |= {f"model.layers.{i}.{name}": shape for name, shape in layer.items()}
    return shapes


def check_checkpoint(folder: Path, config: ModelConfig, files: list[Path]) -> None:
    """Compare the safetensors headers (names, shapes; no tensor is read) with `config`."""
    found = {}  # name -> (file, shape)
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in f.keys():
                    found[name] = (file, tuple(f.get_slice(name).get_shape()))
        except SafetensorError as e:
            raise ValueError(
                f"{file} is not a readable safetensors file ({e}); download it again"
            ) from None
    layers = {name.split(".")[2] for name in found if name.startswith("model.layers.")}
    if len(layers) != config.num_hidden_layers:
        raise ValueError(
            f"{folder / 'config.json'} says num_hidden_layers={config.num_hidden_layers:,} but "
            f"the weights hold {len(layers):,} layers; does config.json match the weights?"
        )
    expected = expected_shapes(config)
    if config.tie_word_embeddings:
        found.pop("lm_head.weight", None)  # tied: it is embed_tokens.weight
    for name, (file, shape) in found.items():
        if name not in expected:
            raise ValueError(f"{file.name}: unexpected tensor {name!r} for {config.model_type}")
        if shape != expected[name]:
            raise ValueError(
                f"{file.name} holds {name} of shape {shape} but config.json implies "
                f"{expected[name]}; does config.json match the weights?"
            )
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ValueError(
            f"checkpoint {folder} lacks tensors: {missing[:5]}{'…' if len(missing) > 5 else ''}"
        )


def _destination(model: CausalLM, params: dict, name: str) -> torch.Tensor:
    """Where checkpoint tensor `name` goes: a parameter, or its rows of a packed one."""
    if name in params:
        return params[name]
    prefix, part, param = name.rsplit(".", 2)  # e.g. model.layers.0.self_attn, q_proj, weight
    for module in model.get_submodule(prefix).children():
        if isinstance(module, PackedLinear) and part in module.parts:
            return getattr(module, param)[module.part(part)]
    raise KeyError(name)


def load_model(
    folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[CausalLM, ModelConfig]:
    """Build the decoder for `folder`'s config.json and fill it from its safetensors files."""
    folder = Path(folder)
    config = ModelConfig.from_pretrained(folder)
    files = safetensors_files(folder)
    check_checkpoint(folder, config, files)  # before building anything
    with torch.device(device):
        model = CausalLM(config)  # random init, overwritten below
    model.to(dtype)
    model.model.rotary.float()  # RoPE angles stay fp32 whatever the weights' dtype
    params = dict(model.named_parameters())
    for file in files:
        with torch.no_grad(), safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                if name == "lm_head.weight" and config.tie_word_embeddings:
                    continue  # tied: it is embed_tokens.weight
                _destination(model, params, name).copy_(f.get_tensor(name))
    return model.eval(), config
