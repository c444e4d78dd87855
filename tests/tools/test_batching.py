"""Static vs continuous batching: predicted schedules by hand, and the engine agrees with them."""

from minirt import LLM, SamplingParams
from minirt.tools.batching import (
    continuous_schedule,
    serve_continuous,
    serve_static,
    static_schedule,
)


def test_static_batches_wait_for_their_longest_request():
    # [1, 4] runs 4 steps (2, 1, 1, 1 running), then [4, 1] the same
    assert static_schedule([1, 4, 4, 1], 2) == [2, 1, 1, 1, 2, 1, 1, 1]


def test_continuous_batching_refills_a_slot_at_the_next_step():
    # step 0: [1, 4]; the 1 finishes -> step 1: [3 left, 4]; ...; step 4: [1 left of 4, last 1]
    assert continuous_schedule([1, 4, 4, 1], 2) == [2, 2, 2, 2, 2]
    assert continuous_schedule([3], 4) == [1, 1, 1]
    assert continuous_schedule([], 4) == []


def test_the_engine_runs_exactly_the_predicted_schedules(qwen3_checkpoint):
    folder, _ = qwen3_checkpoint
    lens = [2, 7, 3, 5, 1, 6]
    prompts = [[70 + i] * (4 + i) for i in range(len(lens))]
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in lens]
    llm = LLM(folder, device="cpu", trace=True, max_num_seqs=3)
    static = serve_static(llm, prompts, params, 3)
    continuous = serve_continuous(llm, prompts, params, 3)
    assert static.running_per_step == static_schedule(lens, 3)
    assert continuous.running_per_step == continuous_schedule(lens, 3)
    assert static.num_generated_tokens == continuous.num_generated_tokens == sum(lens)
    assert continuous.slot_utilisation > static.slot_utilisation
