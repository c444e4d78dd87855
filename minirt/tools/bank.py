"""Shared-memory bank conflicts: which bank each thread of a warp hits, and what it costs.

Shared memory is 32 banks of 4-byte words (bank = byte_address // 4 % 32); one *wavefront* moves
at most one word per bank, 128 bytes. `simulate` counts the wavefronts of one warp-wide access as
Nsight Compute does, so padding and swizzles can be reasoned about on a laptop;
`python -m minirt.bench bank` measures every pattern of `PATTERNS` with ncu to keep it honest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

BANKS = 32
WORD_BYTES = 4
WARP = 32
WAVEFRONT_BYTES = BANKS * WORD_BYTES  # 128: what one wavefront can move
WIDTHS = (4, 8, 16)
OPS = ("ld", "st", "ldmatrix")


@dataclass(frozen=True)
class BankAccess:
    """One warp-wide shared-memory instruction: per-thread banks and its cost in wavefronts."""

    banks: tuple[int | None, ...]  # [32] first bank each thread touches; None = inactive
    wavefronts: int
    ideal: int  # one per phase that has an active thread
    access_bytes: int
    op: str

    @property
    def conflicts(self) -> int:
        return self.wavefronts - self.ideal

    @property
    def ways(self) -> int:
        """The worst phase's serialisation (1 = conflict-free, 32 = fully serialised)."""
        return -(-self.wavefronts // max(self.ideal, 1))

    def to_dict(self) -> dict:
        return {**asdict(self), "banks": list(self.banks), "conflicts": self.conflicts}


def _check(addresses: Sequence[int | None], access_bytes: int, op: str) -> None:
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if access_bytes not in WIDTHS:
        raise ValueError(
            f"access_bytes must be 4, 8 or 16 (32-, 64-, 128-bit), got {access_bytes}; model a "
            "1- or 2-byte access as a 4-byte access of the word that contains it"
        )
    if op == "ldmatrix" and access_bytes != 16:
        raise ValueError(f"ldmatrix reads 16-byte rows; pass access_bytes=16, not {access_bytes}")
    if len(addresses) != WARP:
        raise ValueError(
            f"expected one address per thread of a warp (32), got {len(addresses)}; "
            "pad with None for inactive threads"
        )
    for t, a in enumerate(addresses):
        if a is None:
            continue
        if a < 0 or a % access_bytes:
            raise ValueError(
                f"thread {t}'s address {a} is not a non-negative multiple of {access_bytes}; "
                f"a {access_bytes}-byte shared access must be {access_bytes}-byte aligned "
                "(round the address down or pad the row to a multiple of the width)"
            )


def simulate(addresses: Sequence[int | None], access_bytes: int = 4, op: str = "ld") -> BankAccess:
    """Banks, wavefronts and conflicts of one shared-memory instruction of a warp.

    `addresses` are byte offsets into shared memory, one per thread (None = inactive thread).
    The rules, and where they come from (the GPU run, `python -m minirt.bench bank`, is judge):
    - 32 banks of 4 bytes; threads reading the same 32-bit word get it by broadcast, and of
      threads writing one word only one writes (CUDA C++ Programming Guide, "Shared Memory" for
      compute capability 5.x and later; the same holds on 8.x and 9.x). So a bank costs one
      wavefront per *distinct* word it must serve, for loads and stores alike.
    - Wider accesses are served in phases of 128 bytes: half-warps (threads 0-15, 16-31) for
      8 bytes, quarter-warps for 16 bytes, and one 8x8 b16 matrix (eight 16-byte rows, threads
      8i..8i+7) for ldmatrix; an 8/16-byte access touches 2/4 consecutive banks. A phase costs
      max over banks of the distinct words in it; phases add up. (NVIDIA/cutlass#328, a
      maintainer confirming half-warp 8 B / quarter-warp 16 B phases of 128 contiguous bytes.)
    - A phase with no active thread costs nothing. The ideal is one wavefront per active phase
      (1, 2, 4 for a full warp of 4-, 8-, 16-byte accesses) and conflicts = wavefronts - ideal
      (NVIDIA forum "Clarification: bank conflicts metric vs wavefronts for shared memory
      LDS.128": 32 vs 4 wavefronts per LDS.128, conflicts exactly the difference).
    - Paired wide loads (measured on the H200 by `python -m minirt.bench bank`, as an NVIDIA
      forum answer, "Unexpected shared memory bank conflict", describes for CC 7.x): when every
      thread pair T2i, T2i+1 loads the same 8- or 16-byte address, a phase serves twice the
      threads — the whole warp for 8 bytes, half-warps for 16 — so such a load costs half the
      wavefronts (ld64 pairs or broadcast: 1; ld128: 2). Pairs Ti, Ti+16 sharing addresses do
      not merge (`ld64_halves_same`: 2). Stores to one word cost 1 (`st32_same_word_*`).
    """
    _check(addresses, access_bytes, op)
    per_phase = WAVEFRONT_BYTES // access_bytes  # threads served together: 32, 16 or 8
    if op == "ld" and access_bytes > WORD_BYTES and _pairs_share(addresses):
        per_phase *= 2  # each pair is one request: twice the threads per 128-byte phase
    words_per_access = access_bytes // WORD_BYTES
    wavefronts = ideal = 0
    for start in range(0, WARP, per_phase):
        words_in_bank: dict[int, set[int]] = defaultdict(set)
        for a in addresses[start : start + per_phase]:
            if a is None:
                continue
            for w in range(a // WORD_BYTES, a // WORD_BYTES + words_per_access):
                words_in_bank[w % BANKS].add(w)  # a set: same word = broadcast, no conflict
        if words_in_bank:
            wavefronts += max(len(words) for words in words_in_bank.values())
            ideal += 1
    banks = tuple(None if a is None else a // WORD_BYTES % BANKS for a in addresses)
    return BankAccess(banks, wavefronts, ideal, access_bytes, op)


def _pairs_share(addresses: Sequence[int | None]) -> bool:
    """Every thread pair (2i, 2i + 1) active and loading the same address."""
    pairs = zip(addresses[0::2], addresses[1::2], strict=True)
    return all(a is not None and a == b for a, b in pairs)


# --- the common patterns, as the byte addresses of the 32 threads ---------------------------


def stride_access(stride_words: int, access_bytes: int = 4) -> list[int]:
    """Thread t accesses byte t * stride_words * 4 (stride 1 = contiguous 4-byte words)."""
    return [t * stride_words * WORD_BYTES for t in range(WARP)]


def row_access(tile_cols: int, row: int, dtype_bytes: int = 4, pad: int = 0) -> list[int]:
    """Thread t reads element (row, t) of a row-major tile whose rows hold tile_cols + pad."""
    return [(row * (tile_cols + pad) + t) * dtype_bytes for t in range(WARP)]


def column_access(tile_cols: int, col: int, dtype_bytes: int = 4, pad: int = 0) -> list[int]:
    """Thread t reads element (t, col): consecutive threads are a whole (padded) row apart."""
    return [(t * (tile_cols + pad) + col) * dtype_bytes for t in range(WARP)]


def transposed_row_access(tile_rows: int, row: int, dtype_bytes: int = 4, pad: int = 0):
    """Thread t reads logical (row, t) of a tile stored transposed (column-major), as a
    transpose-on-store leaves it: in memory that is column `row` of a row-major tile."""
    return column_access(tile_rows, row, dtype_bytes, pad)


def broadcast(threads_per_word: int = 32, access_bytes: int = 4) -> list[int]:
    """Groups of `threads_per_word` consecutive threads access the same element."""
    return [(t // threads_per_word) * access_bytes for t in range(WARP)]


def swizzle(offset: int, B: int, M: int, S: int) -> int:
    """CuTe's Swizzle<B, M, S> of an offset: XOR the B bits at M + S into the B bits at M.

    As cute/swizzle.hpp: yyy_mask = ((1 << B) - 1) << (M + S); offset ^ ((offset & yyy_mask) >> S)
    (for S >= 0). With elements as the unit, M keeps 2^M elements together, S is log2 of a row.
    """
    if B < 0 or M < 0 or S < B:
        raise ValueError(f"Swizzle<{B},{M},{S}> needs B >= 0, M >= 0 and S >= B (as CuTe)")
    yyy_mask = ((1 << B) - 1) << (M + S)
    return offset ^ ((offset & yyy_mask) >> S)


def swizzled_column_access(tile_cols, col, dtype_bytes=4, B=5, M=0, S=5) -> list[int]:
    """Column `col` of a row-major tile stored through Swizzle<B, M, S> on element offsets."""
    return [swizzle(t * tile_cols + col, B, M, S) * dtype_bytes for t in range(WARP)]


def ldmatrix_rows(row_bytes: int, swizzled: bool = False) -> list[int]:
    """ldmatrix.x4 over the first 64 bytes of eight rows of a b16 tile: matrix i (threads
    8i..8i+7) is the 16-byte chunk i of rows 0-7. Swizzled = CuTe Swizzle<3,3,3> on b16 element
    offsets (chunk ^= row % 8), valid when a row is 64 b16 (128 bytes)."""
    addresses = []
    for t in range(WARP):
        row, chunk = t % 8, t // 8
        element = row * (row_bytes // 2) + chunk * 8  # b16 elements
        addresses.append((swizzle(element, 3, 3, 3) if swizzled else element) * 2)
    return addresses


def _halves_same(access_bytes: int, phases: int) -> list[int]:
    """Every phase accesses the same contiguous 128 bytes (a probe: are phases ever merged?)."""
    per_phase = WARP // phases
    return [(t % per_phase) * access_bytes for t in range(WARP)]


_TILE = 32  # a 32 x 32 fp32 tile: a row is 128 bytes, one full sweep of the banks
PATTERNS: dict[str, tuple[list[int | None], int, str]] = {
    **{f"ld32_stride{s}": (stride_access(s), 4, "ld") for s in (1, 2, 4, 8, 16, 32, 33)},
    **{f"st32_stride{s}": (stride_access(s), 4, "st") for s in (1, 2, 32, 33)},
    "ld32_tile_row": (row_access(_TILE, 3), 4, "ld"),
    "ld32_tile_column": (column_access(_TILE, 3), 4, "ld"),
    "ld32_tile_column_pad1": (column_access(_TILE, 3, pad=1), 4, "ld"),
    "st32_tile_column": (column_access(_TILE, 3), 4, "st"),
    "st32_tile_column_pad1": (column_access(_TILE, 3, pad=1), 4, "st"),
    "ld32_tile_column_swizzled": (swizzled_column_access(_TILE, 3), 4, "ld"),
    "st32_tile_column_swizzled": (swizzled_column_access(_TILE, 3), 4, "st"),
    "ld32_transposed_tile": (transposed_row_access(_TILE, 5), 4, "ld"),
    "ld32_transposed_tile_pad1": (transposed_row_access(_TILE, 5, pad=1), 4, "ld"),
    "ld32_broadcast_all": (broadcast(32), 4, "ld"),
    "ld32_broadcast_pairs": (broadcast(2), 4, "ld"),
    "st32_same_word_all": (broadcast(32), 4, "st"),
    "st32_same_word_pairs": (broadcast(2), 4, "st"),
    "ld32_stride32_half_active": ([*stride_access(32)[:16], *[None] * 16], 4, "ld"),
    "ld32_stride32_odd_active": (
        [a if t % 2 else None for t, a in enumerate(stride_access(32))], 4, "ld"),
    "ld64_contiguous": (stride_access(2), 8, "ld"),
    "st64_contiguous": (stride_access(2), 8, "st"),
    "ld64_stride2": (stride_access(4), 8, "ld"),  # every other 8-byte element
    "ld64_tile_column": (column_access(_TILE, 1, dtype_bytes=8), 8, "ld"),
    "ld64_halves_same": (_halves_same(8, 2), 8, "ld"),
    "ld64_broadcast_all": (broadcast(32, 8), 8, "ld"),
    "ld64_pairs_same": (broadcast(2, 8), 8, "ld"),
    "ld128_contiguous": (stride_access(4), 16, "ld"),
    "st128_contiguous": (stride_access(4), 16, "st"),
    "ld128_tile_column": (column_access(_TILE, 0), 16, "ld"),  # float4 (t, 0:4), rows 128 B
    "ld128_tile_column_pad4": (column_access(_TILE, 0, pad=4), 16, "ld"),
    "ld128_quarters_same": (_halves_same(16, 4), 16, "ld"),
    "ld128_broadcast_all": (broadcast(32, 16), 16, "ld"),
    "ld128_pairs_same": (broadcast(2, 16), 16, "ld"),
    "ldmatrix_x4_rows128": (ldmatrix_rows(128), 16, "ldmatrix"),
    "ldmatrix_x4_rows128_swizzled": (ldmatrix_rows(128, swizzled=True), 16, "ldmatrix"),
    "ldmatrix_x4_rows144_padded": (ldmatrix_rows(144), 16, "ldmatrix"),
}  # fmt: skip
