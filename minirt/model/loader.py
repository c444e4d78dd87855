"""Find a checkpoint and load its weights with safetensors — never by unpickling.

`resolve_model_path` turns None / "target" / "draft" into the embedded models and checks a local
folder; `load_model` builds the decoder and copies tensors name for name (sharded index
included). minirt never downloads: a hub id gets told how to fetch it yourself.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from minirt.config import ModelConfig
from minirt.model.layers import PackedLinear
from minirt.model.qwen3 import CausalLM

EMBEDDED_DIR = Path(__file__).parent / "embedded"
EMBEDDED = {"target": EMBEDDED_DIR / "target", "draft": EMBEDDED_DIR / "draft"}
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def resolve_model_path(model: str | Path | None) -> Path:
    """None means the embedded target; 'target'/'draft' name the embedded pair."""
    if model is None:
        model = "target"
    if str(model) in EMBEDDED:
        return EMBEDDED[str(model)]
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
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [folder / f for f in sorted(set(weight_map.values()))]
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


def _checkpoint_names(model: CausalLM, config: ModelConfig) -> set[str]:
    """The tensor names a checkpoint must hold: ours, with each packed Linear split back into
    the projections it packs (qkv_proj.weight -> q_proj.weight, k_proj.weight, v_proj.weight)."""
    names = set()
    for name, _ in model.named_parameters():
        module_name, param = name.rsplit(".", 1)
        module = model.get_submodule(module_name)
        if isinstance(module, PackedLinear):
            prefix = module_name.rsplit(".", 1)[0]
            names |= {f"{prefix}.{part}.{param}" for part in module.parts}
        else:
            names.add(name)
    if config.tie_word_embeddings:
        names.discard("lm_head.weight")
    return names


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
    files = safetensors_files(folder)  # check before building anything
    with torch.device(device):
        model = CausalLM(config)  # random init, overwritten below
    model.to(dtype)
    model.model.rotary.float()  # RoPE angles stay fp32 whatever the weights' dtype
    params = dict(model.named_parameters())
    expected = _checkpoint_names(model, config)
    loaded = set()
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                if name not in expected:
                    if name == "lm_head.weight" and config.tie_word_embeddings:
                        continue  # tied: it is embed_tokens.weight
                    raise ValueError(
                        f"{file.name}: unexpected tensor {name!r} for {config.model_type}"
                    )
                dest = _destination(model, params, name)
                tensor = f.get_tensor(name)
                if tensor.shape != dest.shape:
                    raise ValueError(
                        f"{name}: checkpoint shape {tuple(tensor.shape)} != model "
                        f"{tuple(dest.shape)}; does config.json match the weights?"
                    )
                with torch.no_grad():
                    dest.copy_(tensor)
                loaded.add(name)
    missing = sorted(expected - loaded)
    if missing:
        raise ValueError(
            f"checkpoint {folder} lacks tensors: {missing[:5]}{'…' if len(missing) > 5 else ''}"
        )
    return model.eval(), config
