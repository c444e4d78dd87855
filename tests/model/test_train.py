"""The training script end to end on CPU with a tiny config (target, distilled draft, eval and
cards), its schedule and data order, and the corpus builder's hash check."""

import json
import platform
from pathlib import Path

import pytest
import torch

from minirt.model import corpus, train
from minirt.model.tokenizer import VOCAB_SIZE, load_tokenizer

TINY = ["--size", "tiny", "--seq-len", "64", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    # A few stdlib modules, read without the manifest: enough text for the loss to move.
    import argparse as m1
    import json as m2
    import textwrap as m3

    out = tmp_path_factory.mktemp("corpus")
    docs = [Path(m.__file__).read_bytes() for m in (m1, m3)]
    corpus.write_corpus(out, docs, [Path(m2.__file__).read_bytes()], python_version="test")
    return out


@pytest.fixture(scope="module")
def tiny_target(tiny_corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("target")
    argv = ["target", *TINY, "--corpus", str(tiny_corpus), "--out", str(out)]
    info = train.main(
        argv + ["--steps", "60", "--warmup", "5", "--lr", "1e-2", "--eval-every", "0"]
    )
    return out, info


def test_tiny_target_loss_goes_down(tiny_target):
    history = tiny_target[1]["history"]
    assert sum(history[-5:]) / 5 < sum(history[:5]) / 5 - 1.0


def test_saved_target_folder_loads_with_transformers_and_our_tokenizer(tiny_target):
    from transformers import AutoModelForCausalLM

    folder, info = tiny_target
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.dtype == torch.bfloat16  # shipped weights are bf16 to keep the package small
    assert model.config.vocab_size == VOCAB_SIZE and train.count_params(model) == info["params"]
    assert load_tokenizer(folder).eos_token_id == model.config.eos_token_id == 256
    assert json.loads((folder / "training.json").read_text())["args"]["steps"] == 60


def test_draft_distills_from_the_target_and_eval_writes_both_cards(
    tiny_corpus, tiny_target, tmp_path
):
    target, _ = tiny_target
    draft = tmp_path / "draft"
    argv = ["draft", *TINY, "--corpus", str(tiny_corpus), "--out", str(draft)]
    info = train.main(argv + ["--teacher", str(target), "--steps", "20", "--eval-every", "10"])
    assert info["history"][-1] < info["history"][0] and len(info["evals"]) == 2
    flags = ["--eval-tokens", "256", "--sample-tokens", "4", "--device", "cpu"]
    result = train.main(
        [
            "eval",
            "--target",
            str(target),
            "--draft",
            str(draft),
            "--corpus",
            str(tiny_corpus),
            *flags,
        ]
    )
    assert 0.0 <= result["agreement"] <= 1.0 and result["eval_tokens"] == 256
    for folder in (target, draft):
        card = (folder / "README.md").read_text()
        assert "held-out loss" in card and f"{result['agreement']:.3f}" in card
        assert "python -m minirt.model.train target" in card


def test_learning_rate_warms_up_then_follows_a_cosine_to_its_floor():
    a = train.TrainArgs(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [train.lr_at(s, a) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_data_order_depends_only_on_the_seed():
    data = torch.arange(10_000)
    a = train.TrainArgs(batch_size=4, seq_len=16, seed=3)
    x1, y1 = train.sample_batch(data, a, torch.Generator().manual_seed(a.seed))
    x2, y2 = train.sample_batch(data, a, torch.Generator().manual_seed(a.seed))
    assert torch.equal(x1, x2) and torch.equal(y1[:, :-1], x1[:, 1:])


def test_a_sequence_longer_than_the_context_is_refused(tiny_corpus, tmp_path):
    argv = [
        "target",
        *TINY,
        "--max-len",
        "32",
        "--corpus",
        str(tiny_corpus),
        "--out",
        str(tmp_path),
    ]
    with pytest.raises(ValueError, match="max_position_embeddings"):
        train.main(argv + ["--steps", "1"])


def test_corpus_builder_refuses_a_stdlib_that_differs_from_the_manifest(tmp_path):
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    (root / "pkg" / "b.py").write_text("y = 2\n")
    manifest = corpus.write_manifest(tmp_path / "m.json", root=root)
    assert [f["path"] for f in manifest["files"]] == ["a.py", "pkg/b.py"]
    assert set(corpus.read_verified_files(manifest, root)) == {"a.py", "pkg/b.py"}
    (root / "a.py").write_text("x = 2\n")
    with pytest.raises(corpus.CorpusMismatchError, match=f"Python {platform.python_version()}"):
        corpus.read_verified_files(manifest, root)
