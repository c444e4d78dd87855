"""The byte tokenizer's invariants (id b is byte b, specials at 256..263, exact round trips) and
the `Tokenizer` wrapper on both the byte tokenizer and an ordinary BPE tokenizer with merges."""

import json

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from minirt.model.tokenizer import (
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    VOCAB_SIZE,
    Tokenizer,
    build_byte_tokenizer,
    load_tokenizer,
    save_byte_tokenizer,
)

BYTE_TOK = Tokenizer(build_byte_tokenizer(), eos_token_id=EOS_ID)


def test_the_id_of_byte_b_is_b():
    assert BYTE_TOK.encode(bytes(range(128)).decode("ascii")) == list(range(128))
    assert BYTE_TOK.encode("\u00e9\u20ac") == [0xC3, 0xA9, 0xE2, 0x82, 0xAC]
    for b in range(256):
        assert BYTE_TOK.tok.token_to_id(BYTE_TOK.tok.id_to_token(b)) == b
        assert BYTE_TOK.decode([b]) == bytes([b]).decode("utf-8", "replace")


def test_specials_sit_after_the_bytes_and_vocab_is_264():
    assert VOCAB_SIZE == BYTE_TOK.vocab_size == 264
    for i, token in enumerate(SPECIAL_TOKENS):
        assert BYTE_TOK.tok.token_to_id(token) == 256 + i
    assert BYTE_TOK.tok.token_to_id("<|endoftext|>") == EOS_ID == 256
    assert BYTE_TOK.tok.token_to_id("<|pad|>") == PAD_ID == 257


@given(st.text())
def test_encoding_text_gives_its_utf8_bytes_and_decoding_gives_it_back(text):
    assume(not any(token in text for token in SPECIAL_TOKENS))  # those are specials: below
    ids = BYTE_TOK.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert BYTE_TOK.decode(ids) == text


@given(st.binary())
def test_any_byte_string_decodes_without_crashing(data):
    # Partial UTF-8 sequences (a stream cut mid-character) become U+FFFD, never an exception.
    assert BYTE_TOK.decode(list(data)) == data.decode("utf-8", "replace")


def test_decode_skips_special_tokens():
    assert BYTE_TOK.decode([*b"ab", EOS_ID, PAD_ID, 263, *b"c"]) == "abc"


def test_saved_byte_tokenizer_loads_with_its_eos(tmp_path):
    save_byte_tokenizer(tmp_path, model_max_length=1024)
    tok = load_tokenizer(tmp_path)
    assert tok.eos_token_id == EOS_ID and tok.vocab_size == VOCAB_SIZE
    assert tok.encode("héllo") == list("héllo".encode())


def test_saved_byte_tokenizer_loads_with_transformers_autotokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    save_byte_tokenizer(tmp_path, model_max_length=1024)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert tok.eos_token_id == EOS_ID and tok.pad_token_id == PAD_ID
    assert tok("héllo")["input_ids"] == list("héllo".encode())


def test_eos_falls_back_to_config_json_when_tokenizer_config_is_absent(tmp_path):
    build_byte_tokenizer().save(str(tmp_path / "tokenizer.json"))
    assert load_tokenizer(tmp_path).eos_token_id is None
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [257, 256]}))
    assert load_tokenizer(tmp_path).eos_token_id == 257


def test_missing_tokenizer_json_raises_an_error_that_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_wrapper_also_serves_a_bpe_tokenizer_with_merges(tmp_path):
    # A stand-in for a real Hugging Face tokenizer (Qwen3's is byte-level BPE with merges).
    bpe = HFTokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(["def fib(n):\n    return n\n"] * 50, trainer=trainer)
    bpe.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    tok = load_tokenizer(tmp_path)
    text = "def fib(n):\n    return n  # ünïcode\n"
    ids = tok.encode(text)
    assert len(ids) < len(text.encode())  # merges were used
    assert tok.decode(ids) == text
    assert tok.eos_token_id == bpe.token_to_id("<|im_end|>")


def test_a_special_tokens_text_in_a_prompt_is_that_special_token():
    """As with any Hugging Face tokenizer (and vLLM's prompts): "<|pad|>" in the text is the
    special token, not its seven bytes. Hypothesis found this; it is the intended behaviour."""
    assert BYTE_TOK.encode("a<|pad|>b") == [97, PAD_ID, 98]
    assert BYTE_TOK.encode("<|endoftext|>") == [EOS_ID]
