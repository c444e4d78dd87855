import json

import pytest
import torch

from minirt import LLM
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
