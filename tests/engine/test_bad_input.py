"""Bad input: a clear error that says what to do, and the engine stays usable, nothing leaked."""

import pytest

from minirt import LLM, SamplingParams


def still_works(llm: LLM) -> None:
    out = llm.generate(["x = 1\n"], SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)
    assert len(out[0].token_ids) >= 1
    llm.block_manager.check_invariants()
    assert llm.block_manager.num_free_blocks == llm.num_blocks


@pytest.fixture(scope="module")
def small_llm():
    # 8 blocks x 16 tokens = 128 tokens of KV; max_model_len 256
    return LLM(device="cpu", kv_cache_bytes=8 * 16 * 8192, max_model_len=256)


@pytest.mark.parametrize(
    "prompts, match",
    [
        ([], "empty prompt list"),
        (["ok", ""], "prompt 1 is empty"),
        (["a" * 300], "300 tokens but max_model_len is 256.*shorten the prompt"),
        (["a" * 200], "whole KV pool holds 128.*raise kv_cache_bytes"),
        ([[1, 2, 99999]], "outside \\[0, 264\\)"),
    ],
)
def test_bad_prompts_raise_a_clear_error_and_leave_the_engine_usable(small_llm, prompts, match):
    with pytest.raises(ValueError, match=match):
        small_llm.generate(prompts, use_tqdm=False)
    still_works(small_llm)


def test_a_good_prompt_beside_a_bad_one_is_not_left_queued(small_llm):
    with pytest.raises(ValueError):
        small_llm.generate(["fine", "a" * 300], use_tqdm=False)
    assert not small_llm.scheduler.has_unfinished()
    still_works(small_llm)


def test_a_failure_mid_run_frees_every_block(small_llm, monkeypatch):
    calls = {"n": 0}
    real = small_llm.runner.run

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated device error")
        return real(batch)

    monkeypatch.setattr(small_llm.runner, "run", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        small_llm.generate(["def a():", "def b():"], SamplingParams(max_tokens=8), use_tqdm=False)
    monkeypatch.undo()
    still_works(small_llm)


def test_a_sequence_that_would_outgrow_the_whole_pool_stops_with_length(small_llm):
    out = small_llm.generate(
        ["a" * 100], SamplingParams(temperature=0, max_tokens=200, ignore_eos=True), use_tqdm=False
    )[0]
    assert out.finish_reason == "length" and 100 + len(out.token_ids) == 128
    still_works(small_llm)


def test_a_kv_budget_below_one_block_fails_at_start_up():
    with pytest.raises(ValueError, match="holds no block.*raise kv_cache_bytes"):
        LLM(device="cpu", kv_cache_bytes=1000)


def test_mismatched_sampling_params_list_is_refused(small_llm):
    with pytest.raises(ValueError, match="2 prompts but 1 SamplingParams"):
        small_llm.generate(["a", "b"], [SamplingParams()], use_tqdm=False)
