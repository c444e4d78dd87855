"""Bad input: a clear error that says what to do, and the engine stays usable, nothing leaked."""

import numpy as np
import pytest
import torch

from minirt import LLM, SamplingParams

CHECK_PROMPT, CHECK_PARAMS = "x = 1\n", SamplingParams(temperature=0, max_tokens=4)
FIRST_OUTPUT: dict[int, list[int]] = {}  # id(llm) -> its greedy tokens for CHECK_PROMPT when new


def still_works(llm: LLM) -> None:
    out = llm.generate([CHECK_PROMPT], CHECK_PARAMS, use_tqdm=False)
    assert out[0].token_ids == FIRST_OUTPUT[id(llm)]
    llm.block_manager.check_invariants()
    assert llm.block_manager.num_free_blocks == llm.num_blocks


@pytest.fixture(scope="module")
def small_llm():
    # 8 blocks x 16 tokens = 128 tokens of KV; max_model_len 256
    llm = LLM(device="cpu", kv_cache_bytes=8 * 16 * 8192, max_model_len=256)
    FIRST_OUTPUT[id(llm)] = llm.generate([CHECK_PROMPT], CHECK_PARAMS, use_tqdm=False)[0].token_ids
    return llm


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


GREEDY = SamplingParams(temperature=0, max_tokens=4)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("temperature", float("nan"), "sampling_params\\[1\\]: temperature must be a finite"),
        ("seed", 2**64, "sampling_params\\[1\\]: seed must be in"),
        ("max_tokens", 2.5, "sampling_params\\[1\\]: max_tokens must be an integer"),
        ("max_tokens", float("nan"), "sampling_params\\[1\\]: max_tokens must be an integer"),
        ("stop", [None], "sampling_params\\[1\\]: stop must be a string or a list"),
    ],
)
def test_a_bad_request_beside_a_good_one_is_refused_before_either_runs(
    small_llm, field, value, match
):
    bad = SamplingParams()
    setattr(bad, field, value)  # changed after construction: generate() checks again
    with pytest.raises(ValueError, match=match):
        small_llm.generate(["def a():", "def b():"], [GREEDY, bad], use_tqdm=False)
    assert not small_llm.scheduler.has_unfinished()
    still_works(small_llm)


@pytest.mark.parametrize(
    "params, match",
    [
        ([], "2 prompts but 0 SamplingParams"),
        ([GREEDY] * 3, "2 prompts but 3 SamplingParams"),
        ({"temperature": 0}, "sampling_params must be a SamplingParams"),
        ([GREEDY, "greedy"], "sampling_params\\[1\\] is a str"),
    ],
)
def test_a_sampling_params_list_that_does_not_pair_with_the_prompts_is_refused(
    small_llm, params, match
):
    with pytest.raises(ValueError, match=match):
        small_llm.generate(["a", "b"], params, use_tqdm=False)
    still_works(small_llm)


def as_numpy(ids):
    return np.array(ids, dtype=np.int64)


def as_torch(ids):
    return torch.tensor(ids, dtype=torch.int32)


@pytest.mark.parametrize(
    "wrap",
    [as_numpy, as_torch, tuple, lambda ids: [np.int64(t) for t in ids]],
    ids=["numpy", "torch", "tuple", "numpy-scalars"],
)
def test_token_ids_as_numpy_or_torch_generate_what_a_list_does(small_llm, wrap):
    ids = [100, 101, 102, 32]
    want = small_llm.generate([ids], GREEDY, use_tqdm=False)[0]
    for prompts in (wrap(ids), [wrap(ids)]):
        got = small_llm.generate(prompts, GREEDY, use_tqdm=False)[0]
        assert got.token_ids == want.token_ids and got.prompt == ids
    still_works(small_llm)


@pytest.mark.parametrize(
    "prompts, match",
    [
        ([[1.7, 2.2]], "prompt 0 token 0 must be an integer, got 1.7"),
        ([1.7, 2.2], "prompt 0 token 0 must be an integer, got 1.7"),
        (["ok", [1, True]], "prompt 1 token 1 must be an integer, got True"),
        ([np.array([1.0, 2.0])], "prompt 0 has dtype float64; token ids need an integer dtype"),
        ([torch.tensor([1.0])], "prompt 0 has dtype torch.float32; token ids need an integer"),
        ([torch.tensor([True])], "prompt 0 has dtype torch.bool"),
        ([torch.zeros(2, 2, dtype=torch.long)], "prompt 0 is a 2-D array"),
        ([[1, 2], np.array([-1])], "prompt 1 has token id -1 at position 0, outside \\[0, 264\\)"),
        (["ok", None], "prompt 1 is a NoneType"),
        (42, "prompts must be a string, a list of token ids"),
    ],
)
def test_token_ids_that_are_not_integers_in_the_vocabulary_are_refused(small_llm, prompts, match):
    with pytest.raises(ValueError, match=match):
        small_llm.generate(prompts, GREEDY, use_tqdm=False)
    assert not small_llm.scheduler.has_unfinished()
    still_works(small_llm)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_model_len": 0}, "max_model_len must be >= 1, got 0"),
        ({"max_model_len": -5}, "max_model_len must be >= 1, got -5"),
        ({"dtype": "bogus"}, "dtype must be one of"),
        ({"device": "bogus"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({"device": "cuda:99"}, "device='cuda:99' but this machine has"),
    ],
)
def test_engine_settings_that_cannot_run_are_refused_when_the_engine_is_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LLM(**{"device": "cpu", **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_says_so_and_suggests_cpu():
    with pytest.raises(ValueError, match="no usable CUDA GPU; use device='cpu' or 'auto'"):
        LLM(device="cuda")


def test_a_2d_tensor_of_token_ids_is_one_prompt_per_row(small_llm):
    rows = [[100, 101, 102, 32], [40, 41, 42, 43]]
    want = [o.token_ids for o in small_llm.generate(rows, GREEDY, use_tqdm=False)]
    got = [o.token_ids for o in small_llm.generate(torch.tensor(rows), GREEDY, use_tqdm=False)]
    assert got == want
    still_works(small_llm)
