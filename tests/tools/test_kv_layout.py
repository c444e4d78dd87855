"""Contiguous runs of KV accesses under different pool layouts, against hand counts."""

import pytest
import torch

from minirt.tools.kv_layout import (
    LAYOUTS,
    MINIRT_LAYOUT,
    compare_layouts,
    count_access,
    decode_read,
    layout_strides,
    pool_sizes,
    store_one_token,
)

SHAPE = (2, 3, 4, 2, 2, 3)  # kv, layers, blocks, block_size, kv_heads, head_dim
SIZES = pool_sizes(SHAPE)
TOKEN_MAJOR = ("block", "slot", "layer", "kv", "head", "dim")


def test_minirt_layout_strides_are_the_real_pool_tensor_strides():
    pool = torch.empty(SHAPE)
    assert tuple(layout_strides(SIZES, MINIRT_LAYOUT).values()) == pool.stride()


def test_storing_one_token_writes_one_run_each_for_k_and_v():
    s = store_one_token(SIZES, MINIRT_LAYOUT, elem_bytes=4)
    assert (s.runs, s.bytes) == (2, 2 * 2 * 3 * 4)  # K and V: 2 heads x 3 dims each
    assert store_one_token(SIZES, TOKEN_MAJOR, elem_bytes=4).runs == 1


def test_a_decode_read_is_one_run_per_block_unless_blocks_are_adjacent():
    apart = decode_read(SIZES, MINIRT_LAYOUT, 2, [2, 0])
    assert (apart.runs, apart.bytes_per_run) == (4, 2 * 2 * 3 * 2)  # K, V x 2 blocks
    together = decode_read(SIZES, MINIRT_LAYOUT, 2, [1, 2])
    assert together.runs == 2  # blocks 1 and 2 touch: one run for K, one for V
    # token-major: one run per token (its K and V sit side by side), 2 blocks x 2 slots
    assert decode_read(SIZES, TOKEN_MAJOR, 2, [2, 0]).runs == 2 * 2


def test_count_access_of_everything_is_one_run():
    index = {d: range(n) for d, n in SIZES.items()}
    a = count_access(SIZES, MINIRT_LAYOUT, index, 1)
    assert (a.runs, a.bytes) == (1, torch.Size(SHAPE).numel())


def test_a_layout_must_order_exactly_the_six_dims():
    with pytest.raises(ValueError, match="exactly the dims"):
        layout_strides(SIZES, ("kv", "layer", "block", "slot", "head"))


def test_compare_layouts_has_a_row_per_layout():
    rows = compare_layouts(SHAPE, 4, [3, 1])
    assert [r["layout"] for r in rows] == list(LAYOUTS)
    assert rows[0]["store_runs"] == 2 and rows[0]["read_runs"] == 4
