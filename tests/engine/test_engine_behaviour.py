"""Batch invariance, block accounting, prefix caching, seeded sampling and stop strings."""

import json
from pathlib import Path

import pytest
import torch

from minirt import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)


def code_snippets(n: int, length: int = 60) -> list[str]:
    text = Path(json.__file__).read_text()
    step = (len(text) - length) // n
    return [text[i * step : i * step + length] for i in range(n)]


def assert_pool_clean(llm: LLM) -> None:
    bm = llm.block_manager
    bm.check_invariants()
    assert bm.num_free_blocks == llm.num_blocks and not bm.tables
    assert all(r == 0 for r in bm.ref_count)


def test_a_prompts_greedy_output_is_the_same_alone_and_in_a_batch_of_32(embedded_llm):
    prompts = code_snippets(32)
    batched = embedded_llm.generate(prompts, GREEDY, use_tqdm=False)
    for i in (0, 13, 31):
        alone = embedded_llm.generate([prompts[i]], GREEDY, use_tqdm=False)[0]
        assert alone.token_ids == batched[i].token_ids
    assert_pool_clean(embedded_llm)


def test_shared_prefixes_hit_the_cache_and_the_hit_kv_equals_recomputed_kv():
    header = Path(json.__file__).read_text()[:200]  # 200 bytes = 12 full blocks of 16
    prompts = [header + f"\ndef f{i}(x):" for i in range(4)]
    cached = LLM(device="cpu", trace=True)
    out_c = cached.generate(prompts, GREEDY, use_tqdm=False)
    rate = cached.last_stats.prefix_cache_hit_rate
    print(f"prefix-cache hit rate on 4 prompts sharing 200 bytes: {rate:.1%}")
    assert rate > 0
    assert_pool_clean(cached)

    plain = LLM(device="cpu", prefix_cache=None, trace=True)
    out_p = plain.generate(prompts, GREEDY, use_tqdm=False)
    assert [o.token_ids for o in out_c] == [o.token_ids for o in out_p]
    assert plain.last_stats.num_cached_tokens == 0

    # KV of the last prompt's shared blocks: reused in one engine, recomputed in the other.
    def kv_of_last_request(llm, out):
        steps = [e for e in llm.recorder.events if e["type"] == "step"]
        table = next(
            e["block_tables"][out.request_id] for e in steps if out.request_id in e["block_tables"]
        )
        return llm.kv_pool[:, :, table[:12]]

    assert out_c[-1].num_cached_tokens >= 12 * 16 - 16
    torch.testing.assert_close(
        kv_of_last_request(cached, out_c[-1]),
        kv_of_last_request(plain, out_p[-1]),
        rtol=1e-5,
        atol=1e-5,
    )


def test_a_seeded_sample_is_reproducible_and_independent_of_the_batch(embedded_llm):
    p = SamplingParams(
        temperature=0.8, top_k=40, top_p=0.95, max_tokens=20, seed=7, ignore_eos=True
    )
    prompts = code_snippets(6)
    a = embedded_llm.generate(prompts[:1], p, use_tqdm=False)[0]
    b = embedded_llm.generate(prompts, p, use_tqdm=False)[0]
    c = embedded_llm.generate(
        prompts[:1], SamplingParams(**{**p.to_dict(), "seed": 8}), use_tqdm=False
    )[0]
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_a_stop_string_ends_generation_and_is_cut_from_the_text(embedded_llm):
    out = embedded_llm.generate(
        "def fib(n):\n", SamplingParams(temperature=0, max_tokens=64, stop=["\n"]), use_tqdm=False
    )[0]
    assert out.finish_reason == "stop" and "\n" not in out.text
    assert len(out.token_ids) < 64


def test_max_tokens_gives_finish_reason_length(embedded_llm):
    out = embedded_llm.generate([[10, 100, 101]], GREEDY, use_tqdm=False)[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 16


def test_embedded_model_continues_code_with_code(embedded_llm):
    out = embedded_llm.generate(
        "import os\n\n\ndef ", SamplingParams(temperature=0, max_tokens=48), use_tqdm=False
    )[0]
    print(repr(out.text))
    assert "(" in out.text and ":" in out.text  # a def line: name(args):


def test_trace_is_written_and_loads_back(tmp_path, embedded_llm):
    from minirt.trace import load_trace

    llm = LLM(device="cpu", trace=True)
    llm.generate(code_snippets(3), GREEDY, use_tqdm=False)
    trace = load_trace(llm.recorder.save(tmp_path / "t.json"))
    steps = trace.steps()
    assert steps and steps[0]["num_prefill_tokens"] == sum(
        len(llm.tokenizer.encode(s)) for s in code_snippets(3)
    )
    assert trace.meta["num_blocks"] == llm.num_blocks


def test_the_pool_can_be_sized_in_blocks_for_the_target_and_the_draft_alike():
    llm = LLM(device="cpu", num_kv_blocks=7, speculative_model="draft", num_speculative_tokens=2)
    assert llm.num_blocks == 7 and llm.block_manager.num_blocks == 7
    assert llm.kv_pool.shape[2] == 7 and llm.spec.draft.kv_pool.shape[2] == 7
    with pytest.raises(ValueError, match="num_kv_blocks must be >= 1"):
        LLM(device="cpu", num_kv_blocks=0)


def test_on_cpu_the_engine_picks_few_threads_unless_told(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        LLM(device="cpu")
        assert torch.get_num_threads() == 1  # the embedded model: one thread is as fast
        LLM(device="cpu", cpu_threads=2)
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="cpu_threads must be >= 1"):
            LLM(device="cpu", cpu_threads=0)
    finally:
        torch.set_num_threads(before)
