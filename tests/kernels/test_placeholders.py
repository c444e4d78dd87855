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
