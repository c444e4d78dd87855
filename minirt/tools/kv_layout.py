"""Which bytes a KV store or a decode read touches, for a pool layout given as a dim order.

A layout is an order of the logical dims (kv, layer, block, slot, head, dim), outermost first;
minirt's pool is `("kv", "layer", "block", "slot", "head", "dim")`. We enumerate the element
offsets an access touches from the layout's strides and count contiguous runs: fewer, longer
runs mean fewer memory transactions. Notebook 01 (KV cache) compares layouts with this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

DIMS = ("kv", "layer", "block", "slot", "head", "dim")
MINIRT_LAYOUT = DIMS

LAYOUTS: dict[str, tuple[str, ...]] = {
    "minirt (2, L, blocks, block_size, kv_heads, head_dim)": MINIRT_LAYOUT,
    "heads outside slots (2, L, blocks, kv_heads, block_size, head_dim)": (
        "kv", "layer", "block", "head", "slot", "dim",
    ),
    "token-major (blocks, block_size, L, 2, kv_heads, head_dim)": (
        "block", "slot", "layer", "kv", "head", "dim",
    ),
}  # fmt: skip


@dataclass
class Access:
    """The memory one access touches: bytes, contiguous runs, bytes per run (mean)."""

    bytes: int
    runs: int

    @property
    def bytes_per_run(self) -> float:
        return self.bytes / self.runs

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes_per_run": self.bytes_per_run}


def layout_strides(sizes: dict[str, int], layout: Sequence[str]) -> dict[str, int]:
    """Element strides of each logical dim when the dims are stored in `layout` order."""
    if sorted(layout) != sorted(DIMS):
        raise ValueError(f"a layout orders exactly the dims {DIMS}, got {tuple(layout)}")
    strides = torch.empty([sizes[d] for d in layout], device="meta").stride()
    return dict(zip(layout, strides, strict=True))


def count_access(
    sizes: dict[str, int], layout: Sequence[str], index: dict[str, Sequence[int]], elem_bytes: int
) -> Access:
    """Bytes and contiguous runs of the elements selected by `index` (a list per logical dim)."""
    strides = layout_strides(sizes, layout)
    offsets = torch.zeros((), dtype=torch.int64)
    for d in DIMS:
        idx = torch.as_tensor(list(index[d]), dtype=torch.int64) * strides[d]
        offsets = offsets.unsqueeze(-1) + idx  # broadcast: one axis per logical dim
    flat = offsets.flatten().unique()  # sorted
    runs = 1 + int((flat[1:] - flat[:-1] != 1).sum())
    return Access(bytes=flat.numel() * elem_bytes, runs=runs)


def store_one_token(
    sizes: dict[str, int], layout: Sequence[str], elem_bytes: int, layer: int = 0
) -> Access:
    """One new token's K and V in one layer (what attention's store writes per layer)."""
    index = {
        "kv": range(2),
        "layer": [layer],
        "block": [1],
        "slot": [3 % sizes["slot"]],
        "head": range(sizes["head"]),
        "dim": range(sizes["dim"]),
    }
    return count_access(sizes, layout, index, elem_bytes)


def decode_read(
    sizes: dict[str, int],
    layout: Sequence[str],
    elem_bytes: int,
    block_table: Sequence[int],
    layer: int = 0,
) -> Access:
    """One decode step of one sequence in one layer: K and V of every slot of its blocks."""
    index = {
        "kv": range(2),
        "layer": [layer],
        "block": list(block_table),
        "slot": range(sizes["slot"]),
        "head": range(sizes["head"]),
        "dim": range(sizes["dim"]),
    }
    return count_access(sizes, layout, index, elem_bytes)


def pool_sizes(pool_shape: Sequence[int]) -> dict[str, int]:
    """Logical dim sizes of a minirt pool tensor's shape."""
    return dict(zip(DIMS, pool_shape, strict=True))


def compare_layouts(
    pool_shape: Sequence[int], elem_bytes: int, block_table: Sequence[int]
) -> list[dict]:
    """For each layout of LAYOUTS: runs and bytes per run of a token store and a decode read."""
    sizes = pool_sizes(pool_shape)
    rows = []
    for name, layout in LAYOUTS.items():
        store = store_one_token(sizes, layout, elem_bytes)
        read = decode_read(sizes, layout, elem_bytes, block_table)
        rows.append(
            {
                "layout": name,
                "store_runs": store.runs,
                "store_bytes_per_run": int(store.bytes_per_run),
                "read_runs": read.runs,
                "read_bytes_per_run": int(read.bytes_per_run),
            }
        )
    return rows
