"""Tokenizers: the embedded byte-level one, and a thin wrapper that reads any HF `tokenizer.json`.

The byte tokenizer has no merges: token id b *is* byte b (0..255), ids 256..263 are specials
(256 = `<|endoftext|>`, the eos), and every UTF-8 string round-trips exactly. Notebook 01.
"""

from __future__ import annotations

import json
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# Reserved so a later chapter (chat templates, FIM) can add roles without changing vocab_size.
RESERVED_TOKENS = [f"<|reserved_{i}|>" for i in range(6)]
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN, *RESERVED_TOKENS]
BYTE_VOCAB_SIZE = 256
VOCAB_SIZE = BYTE_VOCAB_SIZE + len(SPECIAL_TOKENS)  # 264
EOS_ID = 256
PAD_ID = 257


def build_byte_tokenizer() -> tokenizers.Tokenizer:
    """A `tokenizers.Tokenizer` whose id for byte b is b, plus the eight specials (ids 256..263)."""
    # ByteLevel maps each byte to a printable unicode character (GPT-2's table); giving the
    # character of byte b the id b makes the vocabulary the identity on bytes.
    byte_to_char = _bytes_to_unicode()
    assert set(byte_to_char.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    vocab = {char: b for b, char in byte_to_char.items()}
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)  # appended in order: ids 256, 257, ...
    return tok


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's table: printable Latin-1 bytes map to themselves, the others are shifted past 255
    # in order, so every byte gets a visible, distinct character.
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def save_byte_tokenizer(folder: str | Path, model_max_length: int) -> None:
    """Write `tokenizer.json` and `tokenizer_config.json` (what `transformers.AutoTokenizer`
    reads) of the byte tokenizer into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_byte_tokenizer().save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


class Tokenizer:
    """Text <-> ids through a `tokenizers.Tokenizer`: the byte tokenizer or any real HF one."""

    def __init__(self, tok: tokenizers.Tokenizer, eos_token_id: int | None = None) -> None:
        self.tok, self.eos_token_id = tok, eos_token_id

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        # add_special_tokens=False: no BOS/template; the engine decides what a prompt starts with.
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        # A byte-level decoder replaces an incomplete UTF-8 sequence with U+FFFD instead of
        # raising, which is what a streaming detokenizer needs mid-character.
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos_token_id={self.eos_token_id})"


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """Load `folder/tokenizer.json`; eos comes from tokenizer_config.json, else config.json."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; a model folder needs a Hugging Face tokenizer.json "
            "(copy it from the checkpoint you downloaded, or use an embedded model such as "
            "minirt/model/embedded/target)"
        )
    try:
        tok = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust library raises a bare Exception for any bad file
        raise ValueError(
            f"{path} is not a tokenizer the tokenizers library can read ({e}); copy tokenizer.json "
            "from the checkpoint again"
        ) from None
    return Tokenizer(tok, _read_eos_token_id(path.parent, tok))


def _read_eos_token_id(folder: Path, tok: tokenizers.Tokenizer) -> int | None:
    eos = _read_json(folder / "tokenizer_config.json").get("eos_token")
    if isinstance(eos, dict):  # older files store an AddedToken as a dict
        eos = eos.get("content")
    if isinstance(eos, str) and tok.token_to_id(eos) is not None:
        return tok.token_to_id(eos)
    eos_id = _read_json(folder / "config.json").get("eos_token_id")
    if isinstance(eos_id, list):  # some configs list several stop ids; the first is the eos
        eos_id = eos_id[0] if eos_id else None
    return eos_id if isinstance(eos_id, int) else None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, RecursionError) as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); copy it from the checkpoint again"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got a {type(data).__name__}")
    return data
