"""How much reserved KV memory holds no token: contiguous per-request reservation vs paged blocks.

A contiguous allocator must reserve a request's largest possible length up front (it cannot grow
in place); paging allocates fixed blocks on demand, so only the last block of each sequence has
slack (internal fragmentation, < block_size tokens). Measured from request lengths or from a real
engine trace, step by step. Notebook 01 (KV cache) plots both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class KVWaste:
    """Token slots in use vs held, under paging and under contiguous reservation."""

    num_seqs: int
    used_tokens: int  # tokens whose K/V is stored
    paged_tokens: int  # slots of the blocks held (whole blocks)
    reserved_tokens: int  # slots a contiguous allocator reserves (a fixed length per request)

    @property
    def paged_waste(self) -> float:
        """Share of the held paged slots that hold no token (the last blocks' slack)."""
        return 1 - self.used_tokens / self.paged_tokens if self.paged_tokens else 0.0

    @property
    def contiguous_waste(self) -> float:
        """Share of the reserved contiguous slots that hold no token."""
        return 1 - self.used_tokens / self.reserved_tokens if self.reserved_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "paged_waste": self.paged_waste,
            "contiguous_waste": self.contiguous_waste,
        }


def _blocks(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


def waste_from_lengths(
    lengths: Iterable[int], block_size: int, reserve_len: int | Iterable[int]
) -> KVWaste:
    """Waste when sequences of `lengths` tokens are all resident at once.

    `reserve_len` is what a contiguous allocator reserves per request: one number (say
    max_model_len) or one per sequence (say prompt + max_tokens).
    """
    lengths = list(lengths)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    reserve = [reserve_len] * len(lengths) if isinstance(reserve_len, int) else list(reserve_len)
    if len(reserve) != len(lengths):
        raise ValueError(f"{len(lengths)} lengths but {len(reserve)} reservations")
    for n, r in zip(lengths, reserve, strict=True):
        if n > r:
            raise ValueError(f"a sequence of {n} tokens does not fit its reservation of {r}")
    return KVWaste(
        num_seqs=len(lengths),
        used_tokens=sum(lengths),
        paged_tokens=sum(_blocks(n, block_size) * block_size for n in lengths),
        reserved_tokens=sum(reserve),
    )


def waste_over_trace(
    steps: Iterable[Mapping[str, Any]], block_size: int, reserve_len: int | Mapping[int, int]
) -> list[KVWaste]:
    """Waste after every step of an engine trace (StepEvent dicts), from its block tables.

    A sequence's tokens in the pool are `num_computed_tokens + num_new_tokens` of its last
    scheduled step; its paged slots are `len(block table) x block_size` (a block shared by two
    sequences counts once per holder). `reserve_len` maps seq id -> reservation, or is one number.
    """
    in_pool: dict[int, int] = {}
    out = []
    for step in steps:
        for s in step["scheduled"]:
            in_pool[s["seq_id"]] = s["num_computed_tokens"] + s["num_new_tokens"]
        tables = {int(k): v for k, v in step["block_tables"].items()}
        alive = sorted(tables)
        for seq_id in set(in_pool) - set(alive):  # finished or preempted: nothing left in pool
            del in_pool[seq_id]
        used = [in_pool.get(s, 0) for s in alive]
        if isinstance(reserve_len, int):
            reserved = reserve_len * len(alive)
        else:
            reserved = sum(reserve_len[s] for s in alive)
        out.append(
            KVWaste(
                num_seqs=len(alive),
                used_tokens=sum(used),
                paged_tokens=sum(len(tables[s]) for s in alive) * block_size,
                reserved_tokens=reserved,
            )
        )
    return out


def mean_waste(series: Iterable[KVWaste]) -> dict[str, float]:
    """Waste over a run, weighting each step by the memory it held (ratio of sums, not mean)."""
    series = [w for w in series if w.num_seqs]
    used = sum(w.used_tokens for w in series)
    paged = sum(w.paged_tokens for w in series)
    reserved = sum(w.reserved_tokens for w in series)
    return {
        "paged_waste": 1 - used / paged if paged else 0.0,
        "contiguous_waste": 1 - used / reserved if reserved else 0.0,
    }
