"""The roofline model's arithmetic against cases worked out by hand."""

import pytest

from minirt.config import PRESETS, ModelConfig
from minirt.tools.roofline import (
    H100_SXM,
    Hardware,
    compare_with_bench,
    crossover_batch,
    decode_step,
    matmul_params,
    max_batch_under_tpot,
    measure_cpu,
)

# Per layer: attention 8*2*4*2 + 8*1*4*2 = 192, MLP 3*8*16 = 384, two norms 16 -> 592.
# Two layers 1,184 + embedding 100*8 = 800 + final norm 8 = 1,992 parameters.
TOY = ModelConfig(
    vocab_size=100,
    hidden_size=8,
    intermediate_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=4,
    qk_norm=False,
    tie_word_embeddings=True,
)
SLOW = Hardware("toy", mem_bandwidth=1000.0, peak_flops=10_000.0)  # ridge point 10 FLOP/B


def test_toy_model_has_the_hand_counted_parameters():
    assert TOY.num_parameters() == 1992
    assert matmul_params(TOY) == 1992  # tied: the embedding is the LM head's matmul


def test_untied_input_embedding_is_a_lookup_not_a_matmul():
    untied = ModelConfig(**{**TOY.to_dict(), "tie_word_embeddings": False})
    assert untied.num_parameters() == 1992 + 800
    assert matmul_params(untied) == 1992


def test_decode_step_bytes_flops_and_time_match_the_hand_computation():
    s = decode_step(TOY, batch=2, context_len=3, hw=SLOW)
    # weights 1,992 x 2 B; KV 2 x 2 layers x 1 head x 4 x 2 B = 32 B/token, 2 seqs x (3 + 1).
    assert s.weight_bytes == 3984
    assert s.kv_bytes == 2 * 4 * 32
    # per sequence: 2 x 1,992 + attention 4 x 3 x 2 heads x 4 x 2 layers = 3,984 + 192
    assert s.flops == 2 * (3984 + 192)
    assert s.memory_s == pytest.approx((3984 + 256) / 1000)
    assert s.compute_s == pytest.approx(8352 / 10_000)
    assert s.bound == "memory" and s.time_s == s.memory_s
    assert s.tokens_per_s == pytest.approx(2 / 4.24)
    assert s.intensity == pytest.approx(8352 / 4240)


def test_crossover_batch_is_where_compute_time_overtakes_memory_time():
    # context 0: compute 0.3984 b, memory 3.984 + 0.032 b -> b >= 10.87
    assert crossover_batch(TOY, 0, SLOW) == 11
    assert decode_step(TOY, 10, 0, SLOW).bound == "memory"
    assert decode_step(TOY, 11, 0, SLOW).bound == "compute"


def test_long_context_keeps_decode_memory_bound_at_any_batch():
    # per sequence: 6.7984 s of compute vs 32.032 s of KV reads at context 1,000
    assert crossover_batch(TOY, 1000, SLOW) is None


def test_max_batch_under_tpot_is_the_largest_batch_within_the_target():
    # time(b) = max(3.984 + 0.032 b, 0.3984 b) <= 5 -> b <= 12.55
    assert max_batch_under_tpot(TOY, 0, 5.0, SLOW) == 12
    assert max_batch_under_tpot(TOY, 0, 1.0, SLOW) == 0


def test_h100_llama_3_8b_batch_1_reads_15_gb_in_about_4_5_ms():
    assert H100_SXM.ridge_point == pytest.approx(989e12 / 3.35e12)
    s = decode_step(PRESETS["llama-3-8b"], 1, 0)
    assert s.weight_bytes == pytest.approx(15.01e9, rel=1e-3)
    assert s.time_s == pytest.approx(15.01e9 / 3.35e12, rel=1e-3)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="batch must be >= 1"):
        decode_step(TOY, 0, 10)


def test_bench_comparison_uses_the_measured_ceilings():
    record = {
        "results": [
            {"name": "hbm_copy", "gb_per_s": 1e-6},  # 1,000 B/s
            {"name": "bf16_matmul", "tflop_per_s": 1e-8},  # 10,000 FLOP/s
            {"name": "eager_decode", "batch": 2, "prompt_len": 2, "new_tokens": 2, "step_ms": 8480},
        ]
    }
    (row,) = compare_with_bench(record, TOY)
    assert row["model_measured_ceilings_ms"] == pytest.approx(4240)  # context 2 + 2 // 2 = 3
    assert row["measured_over_model"] == pytest.approx(2.0)
    assert compare_with_bench(None, TOY) == []
    assert compare_with_bench({"results": []}, TOY) == []


def test_bench_comparison_reads_the_cuda_graph_decode_rows_of_a_gpu_run():
    def decode(system, step_ms):
        shape = {"batch": 2, "prompt_len": 2, "new_tokens": 2}
        return {"name": "decode", "system": system, "step_ms": step_ms, **shape}

    ceilings = [
        {"name": "hbm_copy", "gb_per_s": 1e-6},
        {"name": "bf16_matmul", "tflop_per_s": 1e-8},
    ]
    skipped = {"name": "decode", "system": "hf-compile", "batch": 1, "error": "skipped"}
    rows = [decode("minirt-graphs", 4240), decode("minirt-eager", 9999), skipped]
    (row,) = compare_with_bench({"results": ceilings + rows}, TOY)
    assert row["measured_ms"] == 4240 and row["measured_over_model"] == pytest.approx(1.0)
    (eager,) = compare_with_bench({"results": ceilings + rows}, TOY, system="minirt-eager")
    assert eager["measured_ms"] == 9999


def test_this_cpu_is_measured_as_two_positive_numbers_and_threads_are_restored():
    import torch

    before = torch.get_num_threads()
    cpu = measure_cpu(threads=1, nbytes=1 << 20, n=64, repeats=2)
    assert cpu.mem_bandwidth > 0 and cpu.peak_flops > 0 and "1 thread" in cpu.name
    assert torch.get_num_threads() == before
