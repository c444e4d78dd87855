import json
import shutil

import pytest
import torch
from safetensors import safe_open

from minirt import LLM
from minirt.config import ModelConfig
from minirt.model import loader
from minirt.model.loader import load_model, resolve_model_path
from tests.conftest import make_hf_checkpoint


def test_a_sharded_checkpoint_loads_through_its_index(tmp_path):
    hf = make_hf_checkpoint(tmp_path / "one", "llama", tied=False)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    a, _ = load_model(tmp_path / "one")
    b, _ = load_model(tmp_path / "sharded")
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_an_unknown_model_path_says_what_to_pass():
    with pytest.raises(FileNotFoundError, match="does not exist.*checkpoint folder"):
        LLM("/no/such/folder")


def test_a_hub_id_is_never_downloaded_and_the_error_says_how_to_fetch_it():
    with pytest.raises(FileNotFoundError, match="never downloads.*huggingface-cli download"):
        resolve_model_path("Qwen/Qwen3-0.6B")


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LLM(tmp_path)


def test_a_folder_without_safetensors_is_refused(tmp_path):
    make_hf_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        LLM(tmp_path)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_a_pickle_checkpoint_is_refused_and_never_unpickled(tmp_path, name, monkeypatch):
    make_hf_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / name).write_bytes(b"\x80\x04not really a pickle")

    def boom(*a, **k):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", boom)
    with pytest.raises(ValueError, match="refuses to unpickle"):
        LLM(tmp_path)


def test_weights_that_do_not_fit_the_config_are_reported(tmp_path):
    make_hf_checkpoint(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does config.json match"):
        load_model(tmp_path)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    make_hf_checkpoint(folder)
    return folder


def edited_copy(good, tmp_path, config=None, files=None):
    """A copy of the good checkpoint with config.json fields changed and files overwritten."""
    folder = tmp_path / "ckpt"
    shutil.copytree(good, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(config or {})
    (folder / "config.json").write_text(json.dumps(cfg))
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not implemented"),
        (
            {"rope_scaling": {"type": "linear", "factor": 2.0}},
            "rope_scaling has rope_type 'linear'",
        ),
        (
            {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}},
            "rope_parameters has rope_type",
        ),
        ({"use_sliding_window": True}, "sliding-window attention is not supported"),
        (
            {"layer_types": ["full_attention", "sliding_attention"]},
            "layer_types\\[1\\] is 'sliding_attention'",
        ),
        ({"mlp_bias": True}, "mlp_bias=true is not implemented"),
        ({"hidden_size": "64"}, "hidden_size must be an integer, got '64'"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be >= 1"),
        ({"num_key_value_heads": 3}, "must be a multiple of num_key_value_heads \\(3\\)"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false"),
        ({"max_position_embeddings": 10**9}, "max_position_embeddings must be in \\[1, 4194304\\]"),
        ({"vocab_size": None}, "vocab_size must be an integer"),
    ],
)
def test_config_fields_minirt_cannot_honour_are_refused_naming_the_file_and_field(
    good_checkpoint, tmp_path, edit, match
):
    folder = edited_copy(good_checkpoint, tmp_path, config=edit)
    with pytest.raises(ValueError, match=match) as raised:
        LLM(folder, device="cpu")
    assert str(folder / "config.json") in str(raised.value)


def test_a_default_rope_and_all_full_attention_layers_are_accepted(good_checkpoint, tmp_path):
    edit = {"rope_scaling": None, "layer_types": ["full_attention"] * 2, "hidden_act": "silu"}
    folder = edited_copy(good_checkpoint, tmp_path, config=edit)
    load_model(folder)


@pytest.mark.parametrize(
    "files, match",
    [
        ({"config.json": b'{"model_type": "qwen3",'}, "config.json is not valid JSON"),
        ({"config.json": b"[" * 100_000}, "config.json is not valid JSON"),
        ({"config.json": b"[1, 2]"}, "config.json: config.json must hold a JSON object"),
        ({"tokenizer.json": b'{"version": '}, "tokenizer.json is not a tokenizer"),
        ({"tokenizer.json": b"[1, 2]"}, "tokenizer.json is not a tokenizer"),
        ({"tokenizer_config.json": b"{bad"}, "tokenizer_config.json is not valid JSON"),
        ({"model.safetensors": b"\x10" + b"\x00" * 7 + b"{bad"}, "model.safetensors is not a"),
        ({"model.safetensors.index.json": b"{}"}, "model.safetensors.index.json is not a"),
    ],
)
def test_a_malformed_checkpoint_file_is_named_in_the_error(good_checkpoint, tmp_path, files, match):
    folder = edited_copy(good_checkpoint, tmp_path, files=files)
    with pytest.raises(ValueError, match=match):
        LLM(folder, device="cpu")


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"num_hidden_layers": 100_000}, "num_hidden_layers=100,000 but the weights hold 2 layers"),
        ({"hidden_size": 10**6}, "embed_tokens.weight of shape \\(264, 64\\) but config.json"),
        ({"intermediate_size": 10**7}, "mlp.down_proj.weight of shape \\(64, 128\\)"),
        ({"vocab_size": 10**9}, "embed_tokens.weight of shape \\(264, 64\\)"),
    ],
)
def test_absurd_sizes_are_checked_against_the_weights_before_the_model_is_built(
    good_checkpoint, tmp_path, monkeypatch, edit, match
):
    folder = edited_copy(good_checkpoint, tmp_path, config=edit)

    def never(*args, **kwargs):
        raise AssertionError("the model must not be built before the checkpoint is checked")

    monkeypatch.setattr(loader.CausalLM, "__init__", never)
    with pytest.raises(ValueError, match=match):
        load_model(folder)


@pytest.mark.parametrize("arch, tied", [("qwen3", True), ("qwen3", False), ("llama", False)])
def test_expected_shapes_are_exactly_what_transformers_saves(tmp_path, arch, tied):
    make_hf_checkpoint(tmp_path, arch, tied=tied)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        saved = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    assert loader.expected_shapes(ModelConfig.from_pretrained(tmp_path)) == saved
