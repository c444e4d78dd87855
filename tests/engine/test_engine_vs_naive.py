"""The engine's greedy output equals a naive loop that recomputes everything without a cache."""

import json
from pathlib import Path

import pytest
import torch

from minirt import LLM, SamplingParams
from minirt.model.loader import resolve_model_path
from minirt.trace import load_trace

_NAIVE: dict[tuple, list[int]] = {}  # the reference is slow; both preemption modes share it


def naive_greedy(hf, prompt: list[int], n: int) -> list[int]:
    key = (tuple(prompt), n)
    if key not in _NAIVE:
        _NAIVE[key] = _naive_greedy(hf, prompt, n)
    return _NAIVE[key]


def _naive_greedy(hf, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = hf(torch.tensor([ids]), use_cache=False).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_greedy_equals_a_no_cache_loop_under_chunked_prefill_and_preemption(mode):
    """Swap mode: a preempted sequence's KV goes to host memory and comes back into other
    blocks; any corruption on the way would change its next tokens."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(resolve_model_path(None), dtype=torch.float32)
    # 24 blocks x 16 tokens cannot hold 16 sequences of up to ~180 tokens: preemption; a
    # 64-token step budget splits long prompts: chunked prefill.
    llm = LLM(
        device="cpu",
        block_size=16,
        kv_cache_bytes=24 * 16 * 8192,
        max_num_batched_tokens=64,
        trace=True,
        preemption_mode=mode,
    )
    text = Path(json.__file__).read_text()  # any Python has it
    g = torch.Generator().manual_seed(0)
    prompts = []
    for _ in range(16):
        n = int(torch.randint(1, 160, (1,), generator=g))
        start = int(torch.randint(0, len(text) - n, (1,), generator=g))
        prompts.append(llm.tokenizer.encode(text[start : start + n]))
    outs = llm.generate(
        prompts, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True), use_tqdm=False
    )

    prompt_len = {o.request_id: len(p) for o, p in zip(outs, prompts, strict=True)}
    steps = [e for e in llm.recorder.events if e["type"] == "step"]
    partial = [
        s
        for e in steps
        for s in e["scheduled"]
        if s["is_prefill"]
        and s["num_computed_tokens"] + s["num_new_tokens"] < prompt_len[s["seq_id"]]
    ]
    assert llm.last_stats.num_preemptions > 0, "the pool was meant to force preemption"
    assert partial, "the token budget was meant to force chunked prefill"
    assert any(e["num_prefill_tokens"] and e["num_decode_tokens"] for e in steps)
    for p, out in zip(prompts, outs, strict=True):
        assert out.token_ids == naive_greedy(hf, p, 24)
    assert llm.block_manager.num_free_blocks == llm.num_blocks
    if mode == "swap":
        assert llm.scheduler.num_swap_outs > 0, "preemption was meant to swap"
        assert llm.runner.swap.num_free_blocks == llm.runner.swap.host.shape[0]
        assert llm.scheduler.free_host_blocks == llm.runner.swap.host.shape[0]
        # The trace tells the same story: every swap-out comes back in, and the counts add up.
        outs_ = [i for e in steps for i in e["swapped_out"]]
        ins_ = [i for e in steps for i in e["swapped_in"]]
        assert len(outs_) == llm.scheduler.num_swap_outs and sorted(outs_) == sorted(ins_)
        assert all(e["swap_blocks"] > 0 for e in steps if e["swapped_out"] or e["swapped_in"])
        assert max(e["num_swapped"] for e in steps) > 0 and steps[-1]["num_swapped"] == 0
        load_trace(llm.recorder.to_dict())  # and it validates against the schema
