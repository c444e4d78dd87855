"""KV size rows agree with the published per-token figures and the pool's own sizing."""

import pytest

from minirt.config import PRESETS
from minirt.kv import kv_cache_bytes_per_token, max_concurrent_sequences
from minirt.tools.kv_size import (
    WEIGHT_BITS,
    capacity_row,
    capacity_rows,
    kv_size_row,
    kv_size_rows,
)


def test_published_kib_per_token_for_qwen3_and_llama():
    rows = {r["model"]: r for r in kv_size_rows(("qwen3-0.6b", "llama-3-8b"))}
    assert rows["qwen3-0.6b"]["kib_per_token"] == 112  # 2 x 28 x 8 x 128 x 2 B
    assert rows["llama-3-8b"]["kib_per_token"] == 128  # 2 x 32 x 8 x 128 x 2 B
    assert rows["llama-3-8b"]["gib_per_seq"] == pytest.approx(0.5)  # 4,096 tokens


def test_max_seqs_is_the_pools_own_count_and_zero_when_weights_do_not_fit():
    c = PRESETS["llama-3-8b"]
    row = kv_size_row("llama-3-8b", c, 4096)
    weights = c.num_parameters() * 2
    assert row["max_seqs"] == max_concurrent_sequences(c, 80e9, 4096, "bfloat16", weights, 16)
    assert kv_size_row("llama-3-70b", PRESETS["llama-3-70b"], 4096)["max_seqs"] == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block_size": 0}, "block_size must be >= 1, got 0"),
        ({"seq_len": 2.5}, "seq_len must be an integer"),
        ({"memory_bytes": float("nan")}, "memory_bytes must be a finite number"),
    ],
)
def test_sizes_that_cannot_be_divided_into_blocks_are_refused_by_name(kwargs, match):
    args = {"seq_len": 4096, **kwargs}
    with pytest.raises(ValueError, match=match):
        kv_size_row("qwen3-0.6b", PRESETS["qwen3-0.6b"], **args)


def test_capacity_counts_the_weights_at_their_format_and_the_pool_at_its_dtype():
    cfg = PRESETS["llama-3-8b"]
    row = capacity_row("llama-3-8b", cfg, "int4 g128", "float8_e4m3fn", 4096, 80e9)
    weights = cfg.num_parameters() * 4.25 / 8
    assert row["weights_gb"] == pytest.approx(weights / 1e9)
    per_seq = 4096 * kv_cache_bytes_per_token(cfg, "float8_e4m3fn")  # 256 whole blocks
    assert row["max_seqs"] == int((80e9 - weights) // per_seq)
    rows = {(r["weights"], r["kv"]): r["max_seqs"] for r in capacity_rows("llama-3-8b")}
    assert len(rows) == 2 * len(WEIGHT_BITS)
    # fewer weight bits and fewer KV bytes each leave room for more sequences
    assert (
        rows["bf16", "bfloat16"]
        < rows["int4 g128", "bfloat16"]
        < rows["int4 g128", "float8_e4m3fn"]
    )
    assert (
        capacity_row("llama-3-70b", PRESETS["llama-3-70b"], "bf16", "bfloat16", 4096)["max_seqs"]
        == 0
    )
    with pytest.raises(ValueError, match="one of"):
        capacity_row("llama-3-8b", cfg, "int3", "bfloat16", 4096)
