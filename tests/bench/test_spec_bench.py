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


def test_the_alpha_sweep_puts_alpha_and_the_cost_models_prediction_beside_each_speedup():
    """On the CPU with tiny curves: every temperature gives a row whose α is the per-token α
    behind the engine's acceptance rate, and a prediction from the curves of the same run."""
    from minirt.bench.spec import alpha_sweep, cost_curve
    from minirt.tools.spec import alpha_from_acceptance_rate

    curves = []
    for role in ("target", "draft"):
        llm = LLM(role, device="cpu", kv_cache_bytes=2**26)
        curves += cost_curve(llm, f"embedded-{role}", batches=(1, 2), tokens=(1, 3, 5), reps=1,
                             progress=False)  # fmt: skip
    rows = alpha_sweep(temperatures=(0.0, 1.0), k=2, requests=2, max_tokens=8, device="cpu",
                       curve_rows=curves, progress=False, kv_cache_bytes=2**26)  # fmt: skip
    assert [r["temperature"] for r in rows] == [0.0, 1.0]
    for r in rows:
        assert r["alpha"] == alpha_from_acceptance_rate(r["acceptance_rate"], 2)
        assert r["speedup"] == r["tokens_per_s"] / r["plain_tokens_per_s"] > 0
        assert r["predicted_speedup"] > 0
    none = alpha_sweep(temperatures=(0.7,), k=2, requests=1, max_tokens=4, device="cpu",
                       progress=False, kv_cache_bytes=2**26)  # fmt: skip
    assert none[0]["predicted_speedup"] is None  # no curves measured: nothing to predict from
