"""The bank-conflict simulator: hand-derived classic cases, invariants, and ncu's ground truth."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.tools.bank import (
    PATTERNS,
    broadcast,
    column_access,
    ldmatrix_rows,
    row_access,
    simulate,
    stride_access,
    swizzle,
    swizzled_column_access,
)

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def cost(addresses, access_bytes=4, op="ld"):
    r = simulate(addresses, access_bytes, op)
    return r.wavefronts, r.conflicts


# --- classic 4-byte cases: bank = word % 32, one phase of 32 threads -------------------------


def test_contiguous_words_hit_32_different_banks_in_one_wavefront():
    # thread t reads word t: banks 0..31, each once
    assert cost(stride_access(1)) == (1, 0)
    assert simulate(stride_access(1)).banks == tuple(range(32))


def test_stride_two_is_a_two_way_conflict():
    # words 0, 2, ..., 62: only the 16 even banks, two distinct words each (t and t + 16)
    assert cost(stride_access(2)) == (2, 1)


@pytest.mark.parametrize("stride", [1, 2, 4, 8, 16, 32])
def test_a_power_of_two_stride_is_a_stride_way_conflict(stride):
    # 32 words spread over 32 / stride banks: each bank holds `stride` distinct words
    assert cost(stride_access(stride)) == (stride, stride - 1)


def test_stride_32_puts_the_whole_warp_in_bank_zero():
    assert cost(stride_access(32)) == (32, 31)
    assert set(simulate(stride_access(32)).banks) == {0}


def test_an_odd_stride_like_33_is_conflict_free():
    # 33t mod 32 = t mod 32: every thread its own bank
    assert cost(stride_access(33)) == (1, 0)


def test_all_threads_reading_one_word_is_a_broadcast_not_a_conflict():
    assert cost(broadcast(32)) == (1, 0)
    assert cost(broadcast(2)) == (1, 0)  # pairs of threads per word: 16 words, 16 banks


def test_stores_to_one_word_count_once():
    # one thread's value lands (which one is undefined); the bank is busy for one word
    assert cost(broadcast(32), op="st") == (1, 0)


def test_a_row_of_a_32_by_32_tile_is_conflict_free_and_a_column_is_32_way():
    assert cost(row_access(32, row=5)) == (1, 0)
    # column: thread t at word 32t + c, all in bank c
    assert cost(column_access(32, col=5)) == (32, 31)


def test_padding_each_row_by_one_word_fixes_the_column_access():
    # word 33t + c: bank (t + c) % 32, all different
    assert cost(column_access(32, col=5, pad=1)) == (1, 0)


def test_an_xor_swizzle_fixes_the_column_access_without_padding():
    # Swizzle<5,0,5>: column bits ^= row bits, so column c of row t sits in bank c ^ t
    assert cost(swizzled_column_access(32, col=5)) == (1, 0)
    assert sorted(simulate(swizzled_column_access(32, col=5)).banks) == list(range(32))


def test_swizzle_matches_cutes_definition():
    # Swizzle<3,3,3> on offset 0b111_000_000 (row 7, chunk 0): chunk bits become 7
    assert swizzle(0b111_000_000, 3, 3, 3) == 0b111_111_000
    assert swizzle(0b101_000_101, 3, 0, 6) == 0b101_000_000
    assert all(swizzle(swizzle(x, 2, 1, 4), 2, 1, 4) == x for x in range(512))  # an involution


# --- 8- and 16-byte accesses: half- and quarter-warp phases of 128 bytes ---------------------


def test_contiguous_8_byte_accesses_take_two_wavefronts_ideally():
    # 32 x 8 B = 256 B: two half-warps, each 128 B over 32 banks
    assert cost(stride_access(2), 8) == (2, 0)


def test_contiguous_16_byte_accesses_take_four_wavefronts_ideally():
    assert cost(stride_access(4), 16) == (4, 0)


def test_8_byte_stride_two_is_two_way_within_each_half_warp():
    # half-warp: 16 doubles 16 B apart span 256 B, so each touched bank holds two words
    assert cost(stride_access(4), 8) == (4, 2)


def test_16_byte_column_of_a_padded_tile_is_conflict_free():
    # rows of 32 + 4 floats: thread t at word 36t, banks 4t..4t+3 within a quarter-warp
    assert cost(column_access(32, 0, pad=4), 16) == (4, 0)
    assert cost(column_access(32, 0), 16) == (32, 28)  # unpadded: 8 rows in banks 0-3


def test_ldmatrix_rows_of_128_bytes_conflict_and_the_swizzle_fixes_them():
    # each 8x8 matrix = eight 16-byte rows 128 B apart: all in the same four banks
    assert cost(ldmatrix_rows(128), 16, "ldmatrix") == (32, 28)
    assert cost(ldmatrix_rows(128, swizzled=True), 16, "ldmatrix") == (4, 0)


def test_inactive_threads_have_no_bank_and_an_idle_phase_costs_nothing():
    addresses = [*stride_access(4)[:8], *[None] * 24]  # only the first quarter-warp
    r = simulate(addresses, 16)
    assert (r.wavefronts, r.conflicts) == (1, 0)
    assert r.banks[8:] == (None,) * 24


def test_the_registry_has_every_kind_of_pattern():
    kinds = {(w, op) for _, w, op in PATTERNS.values()}
    assert len(PATTERNS) >= 24
    assert {(4, "ld"), (4, "st"), (8, "ld"), (8, "st"), (16, "ld"), (16, "st")} <= kinds
    assert (16, "ldmatrix") in kinds
    for name, (addresses, w, op) in PATTERNS.items():
        assert simulate(addresses, w, op).wavefronts >= 1, name


# --- invariants -------------------------------------------------------------------------------


def warps(width):
    """32 aligned addresses (or None) within 4 KiB for a `width`-byte access."""
    address = st.integers(0, 4096 // width - 1).map(lambda i: i * width)
    return st.lists(st.one_of(st.none(), address, address, address), min_size=32, max_size=32)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([4, 8, 16]).flatmap(lambda w: st.tuples(st.just(w), warps(w))))
def test_wavefronts_never_drop_below_one_per_active_phase(case):
    width, addresses = case
    r = simulate(addresses, width)
    assert r.wavefronts >= r.ideal and r.conflicts >= 0
    active = sum(a is not None for a in addresses)
    assert r.wavefronts <= active * width // 4  # at worst every word its own wavefront


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([4, 8, 16]).flatmap(lambda w: st.tuples(st.just(w), warps(w))),
    st.randoms(use_true_random=False),
)
def test_permuting_threads_within_a_phase_keeps_the_count(case, rng):
    width, addresses = case
    per_phase = 128 // width
    shuffled = []
    for start in range(0, 32, per_phase):
        phase = addresses[start : start + per_phase]
        rng.shuffle(phase)
        shuffled += phase
    assert simulate(shuffled, width).wavefronts == simulate(addresses, width).wavefronts


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([4, 8, 16]).flatmap(lambda w: st.tuples(st.just(w), warps(w))),
    st.lists(st.booleans(), min_size=32, max_size=32),
)
def test_deactivating_threads_never_adds_wavefronts(case, off):
    width, addresses = case
    fewer = [None if o else a for a, o in zip(addresses, off, strict=True)]
    assert simulate(fewer, width).wavefronts <= simulate(addresses, width).wavefronts


# --- errors that say what to do ---------------------------------------------------------------


def test_a_list_that_is_not_a_warp_is_refused():
    with pytest.raises(ValueError, match="32.*pad with None"):
        simulate(stride_access(1)[:16])


def test_a_misaligned_address_is_refused():
    with pytest.raises(ValueError, match="thread 1's address 4 .*8-byte aligned"):
        simulate(stride_access(1), 8)


def test_an_unsupported_width_is_refused():
    with pytest.raises(ValueError, match="4, 8 or 16"):
        simulate(stride_access(1), 2)
    with pytest.raises(ValueError, match="op must be one of"):
        simulate(stride_access(1), 4, "atom")
    with pytest.raises(ValueError, match="access_bytes=16"):
        simulate(stride_access(2), 8, "ldmatrix")


# --- Nsight Compute's counts, once a GPU run is committed ------------------------------------


def _measured_rows():
    files = sorted(RESULTS.glob("*/bank-*.json"))
    if not files:
        pytest.skip(
            "no bench/results/*/bank-*.json committed yet; run `python -m minirt.bench bank` "
            "on a GPU with Nsight Compute and commit the file"
        )
    latest = {}
    for f in files:  # names sort by date: keep each device's newest run
        latest[f.parent.name] = f
    return [(f, r) for f in latest.values() for r in json.loads(f.read_text())["results"]]


def test_the_simulator_matches_nsight_compute_on_every_pattern():
    wrong = []
    for f, row in _measured_rows():
        if row["pattern"] not in PATTERNS:
            wrong.append(f"{f.name}: {row['pattern']} is no longer in PATTERNS; re-run the bench")
            continue
        addresses, width, op = PATTERNS[row["pattern"]]
        assert (width, op) == (row["access_bytes"], row["op"]), row["pattern"]
        got = cost(addresses, width, op)
        if got != (row["wavefronts"], row["conflicts"]):
            wrong.append(f"{f.parent.name}/{row['pattern']}: simulated {got}, "
                         f"ncu {(row['wavefronts'], row['conflicts'])}")  # fmt: skip
    assert not wrong, "wavefronts, conflicts differ:\n" + "\n".join(wrong)
