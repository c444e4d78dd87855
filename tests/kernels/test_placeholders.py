"""The overlapped loop's placeholders resolved in one kernel, against the reference's operators."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.kernels.placeholders import resolve, resolve_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.on_gpu_too  # interpreted on a CPU, compiled on a GPU machine


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(0, 300),  # past one program's 128 ids
    rows=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
def test_each_placeholder_becomes_its_rows_token_and_the_rest_stay(n, rows, seed):
    g = torch.Generator().manual_seed(seed)
    prev = torch.randint(0, 151_936, (rows,), generator=g)
    ids = torch.randint(0, 151_936, (n,), generator=g)
    held = torch.rand(n, generator=g) < 0.5
    ids[held] = -1 - torch.randint(0, rows, (int(held.sum()),), generator=g)
    ids, prev = ids.to(DEVICE), prev.to(DEVICE)
    expected = resolve_ref(ids, prev)
    assert torch.equal(resolve(ids, prev), expected)
    in_place = ids.clone()
    resolve(in_place, prev, out=in_place)  # the CUDA graph's input, rewritten where it is
    assert torch.equal(in_place, expected)
    if n:
        assert (expected >= 0).all() and torch.equal(
            expected[~held.to(DEVICE)], ids[~held.to(DEVICE)]
        )


@settings(max_examples=20, deadline=None)
@given(
    bs=st.integers(1, 40),
    width=st.integers(1, 300),  # past one program's 128 entries
    prev_rows=st.integers(0, 8),  # 0: no placeholders (no last step)
    seed=st.integers(0, 2**16),
)
def test_one_launch_resolves_the_ids_and_spreads_the_short_table_rows(bs, width, prev_rows, seed):
    """The graph's inputs after one copy of [ids | positions | slots | contexts | n short table
    rows]: the kernel leaves what the reference leaves, in the staged buffer and the long rows,
    and touches no entry of the tables past a row's width or below the n rows."""
    from minirt.kernels.placeholders import unpack, unpack_ref

    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, bs + 1, (1,), generator=g))
    staged = torch.randint(0, 1000, (4 * bs + n * width + 5,), generator=g)
    prev = torch.randint(0, 1000, (prev_rows,), generator=g) if prev_rows else None
    if prev_rows:
        held = torch.rand(n, generator=g) < 0.5
        staged[:n][held] = -1 - torch.randint(0, prev_rows, (int(held.sum()),), generator=g)
    tables = torch.full((bs + 2, width + 7), -5, dtype=torch.int64)
    expected = staged.clone(), tables.clone()
    unpack_ref(expected[0], prev, expected[1], n, width, bs)
    dev = [t.to(DEVICE) if t is not None else None for t in (staged, prev, tables)]
    unpack(dev[0], dev[1], dev[2], n, width, bs)
    assert torch.equal(dev[0].cpu(), expected[0]) and torch.equal(dev[2].cpu(), expected[1])
    assert (expected[0][:n] >= 0).all()
    assert (expected[1][n:] == -5).all() and (expected[1][:, width:] == -5).all()


@settings(max_examples=30, deadline=None)
@given(
    lens=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    pad=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_pack_lays_out_padded_columns_then_the_padded_table_rows(lens, pad, seed):
    """The host buffer one copy takes to the device, as the Python lists would spell it."""
    from minirt.kernels.placeholders import pack

    g = torch.Generator().manual_seed(seed)
    n = len(lens)
    tables = [torch.randint(0, 10**6, (k,), generator=g).tolist() for k in lens]
    columns = [torch.randint(-(2**40), 2**40, (n,), generator=g).tolist() for _ in range(3)]
    width, packed = pack(columns, tables, n + pad, fills=[0, -1, 7])
    rows = [b for t in tables for b in (*t, *[-1] * (width - len(t)))]
    expected = [*columns[0], *[0] * pad, *columns[1], *[-1] * pad, *columns[2], *[7] * pad, *rows]
    assert width == max(lens) and packed.dtype == torch.int64 and packed.tolist() == expected
    width, packed = pack([columns[0], columns[1][:1]], tables)  # unpadded: each its own length
    assert packed.tolist() == [*columns[0], columns[1][0], *rows]
