"""The LM head's tensor-core kernel with the greedy argmax against F.linear and torch.argmax."""

import pytest
import torch

from minirt.kernels import gemv as G
from minirt.kernels import lm_head as H

from .conftest import rel_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.on_gpu_too  # interpreted on a CPU, compiled on a GPU machine
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
BOUND = {torch.float32: 1e-5, torch.bfloat16: 1e-2}  # fp32 sums in another order; bf16 output


@pytest.fixture(autouse=True)
def _on(monkeypatch):
    monkeypatch.setattr(H, "MAX_ROWS", 256)  # the head on past the GEMV's rows


def _rand(*shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(DEVICE, DTYPE)


# rows past the GEMV's, in one row tile or several; N not a multiple of BLOCK_N
@pytest.mark.parametrize(("m", "n", "k"), [(3, 300, 64), (20, 130, 32), (70, 200, 48)])
@pytest.mark.parametrize("chunk", [G.ARGMAX_BLOCK, 2])  # 2: the argmax reads maxima in chunks
def test_the_head_stores_the_logits_and_takes_the_argmax_of_them(monkeypatch, m, n, k, chunk):
    """The logits as F.linear makes them (within the dtype's rounding), and each row's argmax
    exactly that of the stored logits: ties to the first index, within a tile and across tiles."""
    monkeypatch.setattr(G, "ARGMAX_BLOCK", chunk)
    x, w = _rand(m, k, seed=k + m), _rand(n, k, seed=n, scale=k**-0.5)
    assert H.fits(x, w)
    y, tokens = H.linear_argmax(x, w)
    y_ref, _ = H.linear_argmax_ref(x, w)
    assert y.shape == (m, n) and y.dtype == DTYPE and rel_error(y, y_ref) < BOUND[DTYPE]
    assert tokens.dtype == torch.int64 and torch.equal(tokens, y.argmax(-1))
    tie = w.clone()
    tie[1] = tie[n - 1] = x[m - 1] * 8  # rows of W in the first and the last tile tie, largest
    tie[5] = tie[6] = x[0] * 8  # and two in one tile
    y, tokens = H.linear_argmax(x, tie)
    assert tokens[m - 1].item() == 1 and tokens[0].item() == 5
    assert torch.equal(tokens, y.argmax(-1))


@pytest.mark.parametrize("config", [
    {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "num_warps": 4, "num_stages": 2},
    {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3},  # K < BLOCK_K
])  # fmt: skip
def test_other_tiles_give_the_same_tokens(config):
    x, w = _rand(9, 32, seed=3), _rand(100, 32, seed=4, scale=32**-0.5)
    y, tokens = H._head(x, w, config)
    assert rel_error(y, H.linear_argmax_ref(x, w)[0]) < BOUND[DTYPE]
    assert torch.equal(tokens, y.argmax(-1))


def test_rows_pick_the_gemv_the_head_or_f_linear(monkeypatch):
    """One or two rows: the GEMV; up to MAX_ROWS: the head here; past it, or with a bias: F.linear
    and torch.argmax. Every path gives the argmax of its logits."""
    w = _rand(50, 32, seed=5, scale=32**-0.5)
    monkeypatch.setattr(H, "MAX_ROWS", 8)
    calls = []
    monkeypatch.setattr(H, "_head", lambda *a: calls.append("head") or G.linear_argmax_ref(*a))
    monkeypatch.setattr(
        G, "_gemv", lambda *a, **k: calls.append("gemv") or G.linear_argmax_ref(*a[:3])
    )
    for m, bias in ((2, None), (3, None), (8, None), (9, None), (5, _rand(50, seed=6))):
        x = _rand(m, 32, seed=m)
        y, tokens = H.linear_argmax(x, w, bias)
        assert torch.equal(tokens, y.argmax(-1))
    assert calls == ["gemv", "head", "head"]
    assert H.fuses_argmax(8) and not H.fuses_argmax(9)
