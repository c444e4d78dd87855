"""`minirt.bench.spec.full_batch_decode` on the CPU: the quantity the cost model predicts."""

from minirt import LLM, SamplingParams
from minirt.bench.spec import full_batch_decode, prompts


def test_full_batch_decode_counts_steps_where_every_sequence_decodes_even_with_lookahead():
    """6 decodes x (1 + 4 lookahead slots) = 30 tokens exceed a 24-token budget: without the
    extra room full_batch_decode gives, the last prompts wait until others finish and no step
    ever has the whole batch (the first H100 run died of exactly that at batch 512)."""
    llm = LLM(speculative_model="draft", num_speculative_tokens=4, max_num_batched_tokens=24)
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    row = full_batch_decode(llm, prompts(6, length=16), params)
    assert row["num_steps"] > 0 and row["tokens_per_step"] >= 1.0
    assert 0.0 <= row["acceptance_rate"] <= 1.0
    assert llm.config.max_num_batched_tokens == 24  # the budget is put back
    assert llm.block_manager.num_free_blocks == llm.num_blocks  # nothing leaked
