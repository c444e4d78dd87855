"""Streaming text never sends half a character or the start of a stop string; chat templates."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.model.tokenizer import EOS_ID, Tokenizer, build_byte_tokenizer
from minirt.sampling_params import SamplingParams
from minirt.serve.chat import PLAIN_TEMPLATE, ChatTemplate
from minirt.serve.detok import IncrementalText

TOK = Tokenizer(build_byte_tokenizer(), EOS_ID)


def _stream(text: str, stop: list[str], eos: bool = True) -> list[str]:
    ids = list(text.encode()) + ([EOS_ID] if eos else [])
    inc = IncrementalText(TOK, {EOS_ID}, SamplingParams(stop=stop))
    return [inc.add([t], finished=i == len(ids) - 1) for i, t in enumerate(ids)]


def test_a_multibyte_character_is_sent_whole_once_its_last_byte_arrives():
    pieces = _stream("aé€b", [])
    assert "\ufffd" not in "".join(pieces) and "".join(pieces) == "aé€b"
    assert pieces[1:3] == ["", "é"]  # é is two bytes


def test_text_up_to_a_stop_string_is_sent_and_nothing_from_it_on():
    pieces = _stream("x = 1\nreturn x", ["\nreturn"], eos=False)
    assert "".join(pieces) == "x = 1"
    assert all("\n" not in p for p in pieces)


def test_the_embedded_model_gets_the_plain_template(tmp_path):
    chat = ChatTemplate(tmp_path)  # no tokenizer_config.json at all
    assert chat.source == PLAIN_TEMPLATE
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert chat.render(messages) == "system: be brief\nuser: hi\nassistant:"


def test_a_checkpoint_template_is_rendered_with_its_special_tokens(tmp_path):
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}{{ eos_token }}\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    config = {"chat_template": template, "eos_token": "<|im_end|>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    text = ChatTemplate(tmp_path).render([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.lists(st.integers(1, 4), min_size=1, max_size=40))
def test_stepwise_pieces_join_to_the_whole_decode(text, step_sizes):
    """The windowed decode sends, step by step, exactly what decoding everything gives."""
    ids = list(text.encode())
    inc = IncrementalText(TOK, {EOS_ID}, SamplingParams())
    pieces, i, k = [], 0, 0
    while i < len(ids):
        n = step_sizes[k % len(step_sizes)]
        pieces.append(inc.add(ids[i : i + n], finished=i + n >= len(ids)))
        i, k = i + n, k + 1
        assert "\ufffd" not in "".join(pieces) or "\ufffd" in text
    assert "".join(pieces) == text


def test_a_step_decodes_a_window_not_the_whole_answer():
    class Counting(Tokenizer):
        decoded = 0

        def decode(self, ids):
            Counting.decoded += len(ids)
            return super().decode(ids)

    tok = Counting(build_byte_tokenizer(), EOS_ID)
    inc = IncrementalText(tok, {EOS_ID}, SamplingParams())
    for t in b"x" * 2000:
        inc.add([t], finished=False)
    assert Counting.decoded < 10 * 2000  # the whole answer each step would be ~2,000,000


def test_a_stream_that_fell_behind_gets_what_waited_as_one_chunk_with_the_same_text():
    """Answer.pieces merges the deltas queued while the client was slow: fewer writes, the
    same text, and the finish reason of the last one."""
    import asyncio
    from types import SimpleNamespace

    from minirt.serve.app import Answer
    from minirt.serve.engine_loop import ServeRequest, TokenDelta

    engine = SimpleNamespace(tokenizer=TOK, eos_ids={EOS_ID}, abort=None, http_chunks=0)

    async def pieces(deltas: list[TokenDelta]) -> list[tuple[str, str | None]]:
        req = ServeRequest(list(b"hi"), SamplingParams(stop=[]), asyncio.Queue())
        answer = Answer(engine, req)
        for d in deltas:
            req.queue.put_nowait(d)  # all queued before the handler reads: it fell behind
        return [p async for p in answer.pieces()]

    ids = list("héllo wörld".encode())
    steps = [TokenDelta([t]) for t in ids[:-1]] + [TokenDelta(ids[-1:], "length")]
    merged = asyncio.run(pieces(steps))
    assert merged == [("héllo wörld", "length")]
    assert engine.http_chunks == 1  # counted as written: one chunk, the simulator's unit
    import pytest

    from minirt.serve.protocol import APIError

    with pytest.raises(APIError, match="gone"):  # an error merged in still ends it as an error
        asyncio.run(pieces([TokenDelta(ids[:3]), TokenDelta([], "error", "gone")]))
