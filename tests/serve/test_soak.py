"""Three hundred requests at once, streamed and not: every answer equals offline `generate`.

A hundred distinct prompts, each sent three times (once as a stream), keep the CPU reference
short while the server still sees every kind of arrival: fresh prompts, repeats, shared headers.
"""

from __future__ import annotations

import asyncio
import json
import random

import httpx

from tests.serve.conftest import greedy_offline, wait_until_idle

NUM_REQUESTS = 300
NUM_PROMPTS = 100
MAX_TOKENS = 6


def _prompts() -> list[str]:
    """Prompts of 4-40 characters, a third of them behind a shared 32-character header."""
    from pathlib import Path

    import minirt.serve.app as source

    text = Path(source.__file__).read_text()
    rng = random.Random(0)
    header = text[:32]
    prompts = []
    for i in range(NUM_PROMPTS):
        start, length = rng.randrange(len(text) - 200), rng.randrange(4, 40)
        body = text[start : start + length]
        prompts.append(header + body if i % 3 == 0 else body)
    return prompts


async def _ask(client: httpx.AsyncClient, url: str, prompt: str, stream: bool) -> str:
    body = {"model": "target", "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
    if not stream:
        response = await client.post(url + "/v1/completions", json=body)
        response.raise_for_status()
        return response.json()["choices"][0]["text"]
    parts = []
    async with client.stream("POST", url + "/v1/completions", json={**body, "stream": True}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                parts.append(json.loads(line[6:])["choices"][0]["text"])
    return "".join(parts)


async def _all(url: str, prompts: list[str]) -> list[str]:
    limits = httpx.Limits(max_connections=NUM_REQUESTS)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        asks = [
            _ask(client, url, p, stream=(i + i // NUM_PROMPTS) % 3 == 0)
            for i, p in enumerate(prompts)
        ]
        return await asyncio.gather(*asks)


def test_hundreds_of_concurrent_requests_each_get_the_offline_answer(server, embedded_llm):
    url, _ = server
    prompts = _prompts()
    expected = [o.text for o in greedy_offline(embedded_llm, prompts, MAX_TOKENS)]
    requests = [i % NUM_PROMPTS for i in range(NUM_REQUESTS)]
    answers = asyncio.run(_all(url, [prompts[i] for i in requests]))
    expected = [expected[i] for i in requests]
    wrong = [i for i, (a, e) in enumerate(zip(answers, expected, strict=True)) if a != e]
    assert not wrong, f"{len(wrong)} answers differ, e.g. {answers[wrong[0]]!r}"
    assert wait_until_idle(url)["num_blocks_used"] == 0
