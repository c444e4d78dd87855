"""The shipped models: complete Hugging Face folders, bf16 and small, the right sizes, loadable by
transformers, a draft that agrees with its target, cards that carry the measured numbers, and a
corpus manifest that matches this Python's standard library."""

import json
import math
import platform
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from minirt.model import corpus
from minirt.model.embedded import DRAFT_DIR, MANIFEST_PATH, TARGET_DIR
from minirt.model.embedded.evaluate import agreement
from minirt.model.tokenizer import EOS_ID, VOCAB_SIZE, load_tokenizer
from minirt.model.train import SIZES

FOLDERS = {"target": TARGET_DIR, "draft": DRAFT_DIR}
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
FILES += ["README.md", "training.json", "eval.json"]


def stored_params(folder: Path) -> dict[str, tuple[str, int]]:
    """name -> (dtype, numel), read from the safetensors header without loading weights."""
    with safe_open(folder / "model.safetensors", "pt") as f:
        slices = {k: f.get_slice(k) for k in f.keys()}
        return {k: (s.get_dtype(), math.prod(s.get_shape())) for k, s in slices.items()}


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM

    return {name: AutoModelForCausalLM.from_pretrained(d).float() for name, d in FOLDERS.items()}


@pytest.mark.parametrize("name", FOLDERS)
def test_shipped_folder_is_a_complete_hugging_face_checkpoint(name):
    missing = [f for f in FILES if not (FOLDERS[name] / f).is_file()]
    assert not missing, f"{FOLDERS[name]} lacks {missing}; see its README.md to retrain"


def test_shipped_weights_are_bf16_and_both_folders_fit_in_16_mb():
    total = sum(f.stat().st_size for d in FOLDERS.values() for f in d.iterdir())
    assert total <= 16_000_000
    for d in FOLDERS.values():
        assert {dtype for dtype, _ in stored_params(d).values()} == {"BF16"}


def test_parameter_counts_are_in_range():
    target = sum(n for _, n in stored_params(TARGET_DIR).values())
    draft = sum(n for _, n in stored_params(DRAFT_DIR).values())
    assert 3_000_000 <= target <= 10_000_000
    assert draft * 8 <= target


@pytest.mark.parametrize("name", FOLDERS)
def test_shipped_config_is_the_training_size_with_the_byte_vocabulary(name):
    config = json.loads((FOLDERS[name] / "config.json").read_text())
    assert {k: config[k] for k in SIZES[name]} == SIZES[name]
    assert config["vocab_size"] == VOCAB_SIZE and config["eos_token_id"] == EOS_ID
    assert config["max_position_embeddings"] == 1024 and config["tie_word_embeddings"]


@pytest.mark.parametrize("name", FOLDERS)
def test_transformers_loads_each_model_and_both_tokenizers_agree(models, name):
    from transformers import AutoTokenizer

    ours, theirs = load_tokenizer(FOLDERS[name]), AutoTokenizer.from_pretrained(FOLDERS[name])
    ids = ours.encode("def fib(n):")
    assert ids == theirs("def fib(n):")["input_ids"] == list(b"def fib(n):")
    assert ours.eos_token_id == theirs.eos_token_id == EOS_ID
    logits = models[name](torch.tensor([ids])).logits  # [1, seq, vocab]
    assert logits.shape == (1, len(ids), VOCAB_SIZE) and torch.isfinite(logits).all()


def test_draft_mostly_agrees_with_the_target_on_code_it_never_saw(models):
    # minirt's own source is not in the stdlib corpus, so this is held-out text.
    text = Path(corpus.__file__).read_bytes()[:1025]
    ids = torch.tensor(list(text))
    rate = agreement(models["draft"], models["target"], ids, 1024, 1025, torch.device("cpu"))
    assert rate >= 0.6


@pytest.mark.parametrize("name", FOLDERS)
def test_card_reports_the_measured_numbers(name):
    card = (FOLDERS[name] / "README.md").read_text()
    measured = json.loads((FOLDERS[name] / "eval.json").read_text())
    trained = json.loads((FOLDERS[name] / "training.json").read_text())
    assert f"{measured[f'{name}_val_nats_per_byte']:.4f} nats/byte" in card
    assert f"{measured['agreement']:.3f}" in card and f"{trained['params']:,}" in card
    assert f"{trained['tokens_seen']:,} tokens" in card and trained["date"] in card
    assert "python -m minirt.model.train target" in card
    assert measured["agreement"] >= 0.6  # speculative decoding needs a draft that agrees


def test_manifest_split_and_totals_are_consistent():
    m = corpus.load_manifest(MANIFEST_PATH)
    assert m["val_files"] == [f["path"] for f in m["files"] if f["split"] == "val"]
    assert (
        m["total_bytes"] == sum(f["bytes"] for f in m["files"]) == m["train_bytes"] + m["val_bytes"]
    )
    assert all(corpus.is_val_file(p) for p in m["val_files"])
    assert not any(part in {"test", "tests"} for f in m["files"] for part in f["path"].split("/"))


def test_manifest_hashes_match_this_pythons_stdlib():
    m = corpus.load_manifest(MANIFEST_PATH)
    here = (platform.python_implementation(), platform.python_version())
    if here != (m["implementation"], m["python_version"]):
        pytest.skip(
            f"the corpus manifest is for {m['implementation']} {m['python_version']}; this is "
            f"{here[0]} {here[1]}, whose stdlib files differ by design"
        )
    assert len(corpus.read_verified_files(m)) == m["num_files"]
