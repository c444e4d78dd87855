"""The fused acceptance rule against the reference: the same random numbers, the same tokens."""

import pytest
import torch

from minirt.kernels.rejection import rejection_sample_rows
from minirt.spec.rejection import rejection_sample


def _case(seed: int, batch: int, k: int, vocab: int, device="cpu", same: bool = False):
    """Drafts from q; p and q unlike (or, `same`, equal: nothing is ever rejected)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.softmax(2 * torch.randn(batch, k, vocab, generator=g), -1)
    p = torch.softmax(2 * torch.randn(batch, k + 1, vocab, generator=g), -1)
    if same:
        p[:, :k] = q
    drafts = torch.multinomial(q.reshape(-1, vocab), 1, generator=g).reshape(batch, k)
    return [t.to(device) for t in (drafts, q, p)]


def _both(drafts, q, p, seed, device="cpu"):
    ref = rejection_sample(drafts, q, p, torch.Generator(device).manual_seed(seed))
    rows = rejection_sample_rows(drafts, q, p, torch.Generator(device).manual_seed(seed)).tolist()
    return ref, rows


@pytest.mark.parametrize("batch,k,vocab", [(1, 4, 50), (3, 2, 300), (2, 5, 7)])
def test_the_kernel_returns_the_references_verdict(batch, k, vocab):
    for seed in range(12):
        ref, rows = _both(*_case(seed, batch, k, vocab), seed)
        assert [r[0] for r in rows] == ref.num_accepted
        assert [r[2 : 2 + r[0]] + [r[1]] for r in rows] == ref.tokens


def test_it_accepts_every_guess_when_the_draft_is_the_target_and_draws_the_bonus_from_p():
    drafts, q, p = _case(0, 4, 3, 20, same=True)
    ref, rows = _both(drafts, q, p, seed=5)
    assert [r[0] for r in rows] == [3] * 4 == ref.num_accepted
    assert [r[1] for r in rows] == [t[-1] for t in ref.tokens]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_kernel_returns_the_references_verdict_on_the_gpu():
    for seed in range(20):  # the byte vocabulary of the trained pairs and a Qwen-sized one
        for vocab in (264, 151936):
            ref, rows = _both(*_case(seed, 2, 4, vocab, "cuda"), seed, "cuda")
            assert [r[2 : 2 + r[0]] + [r[1]] for r in rows] == ref.tokens
