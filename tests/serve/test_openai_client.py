"""The official openai client against the server: answers equal offline `LLM.generate`."""

from __future__ import annotations

import openai
import pytest

from tests.serve.conftest import greedy_offline

PROMPT = "def read_lines(path):"


@pytest.fixture(scope="module")
def client(server):
    url, _ = server
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(embedded_llm):
    # The server's thread owns its LLM: the reference comes from another engine, same weights.
    return greedy_offline(embedded_llm, [PROMPT], 24)[0]


def test_a_greedy_completion_equals_the_offline_generate_output(client, reference):
    out = client.completions.create(model="target", prompt=PROMPT, max_tokens=24, temperature=0)
    assert out.choices[0].text == reference.text
    assert out.choices[0].finish_reason == reference.finish_reason
    assert out.usage.completion_tokens == len(reference.token_ids)
    assert out.usage.prompt_tokens == len(PROMPT.encode())  # the byte tokenizer


def test_a_streamed_completion_sends_the_tokens_in_chunks_then_usage(client, reference):
    usage = {"include_usage": True}
    stream = client.completions.create(
        model="target",
        prompt=PROMPT,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options=usage,
    )
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == reference.text
    # One chunk a step while the client keeps up; a stream that falls behind the engine sends
    # what waits as one chunk (as vLLM does), so on a busy machine there can be fewer.
    assert 2 <= len(texts) <= len(reference.token_ids) and all(texts)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == len(reference.token_ids)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_a_token_id_prompt_is_answered_like_its_text(client, reference):
    ids = list(PROMPT.encode())
    out = client.completions.create(model="target", prompt=ids, max_tokens=24, temperature=0)
    assert out.choices[0].text == reference.text


def test_chat_streams_the_same_text_it_answers_at_once(client):
    messages = [{"role": "user", "content": "write a function"}]
    whole = client.chat.completions.create(
        model="target", messages=messages, max_tokens=12, temperature=0
    )
    stream = client.chat.completions.create(
        model="target", messages=messages, max_tokens=12, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert whole.choices[0].message.role == "assistant"
    assert text == whole.choices[0].message.content
    assert whole.usage.completion_tokens == 12


def test_the_models_list_names_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["target"]


def test_stop_strings_cut_the_streamed_text_where_the_offline_text_ends(client, embedded_llm):
    ref = greedy_offline(embedded_llm, [PROMPT], 40, stop=["lines"])[0]
    assert ref.finish_reason == "stop"  # the stop string is reached, held back, then cut
    stream = client.completions.create(
        model="target", prompt=PROMPT, max_tokens=40, temperature=0, stop=["lines"], stream=True
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == ref.text
