"""Speculative sampling keeps the target's distribution exactly — and the test can tell when it
does not: the same statistical check fails for planted off-by-one bugs in the acceptance rule."""

import pytest
import torch
from scipy.stats import chisquare

from minirt.spec import greedy_verify, rejection_sample
from minirt.spec.rejection import _verdict

V, K, N = 6, 3, 200_000  # vocabulary, drafted tokens, trials (one batch row each)


def _dists(seed: int, rows: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2.0 * torch.randn(rows, V, generator=g, dtype=torch.float64), -1)


def emitted_token_pvalues(sampler, seed: int = 0) -> list[float]:
    """A toy model whose next-token distribution depends only on the position: the target's
    j-th token must be distributed as p_j. Draft from q, verify with `sampler`, and test the
    j-th emitted token (among trials that emitted at least j) against p_j (chi-square)."""
    p = _dists(seed, K + 1)  # target: p_1..p_{k+1}
    q = _dists(seed + 1, K)  # draft: q_1..q_k, unlike p
    g = torch.Generator().manual_seed(seed + 2)
    drafts = torch.stack([torch.multinomial(q[i], N, replacement=True, generator=g)
                          for i in range(K)], 1)  # fmt: skip
    verdict = sampler(drafts, q.expand(N, K, V), p.expand(N, K + 1, V), g)
    pvalues = []
    for j in range(K + 1):
        seen = [t[j] for t in verdict.tokens if len(t) > j]
        counts = torch.bincount(torch.tensor(seen), minlength=V).double()
        pvalues.append(float(chisquare(counts, counts.sum() * p[j]).pvalue))
    return pvalues


def test_every_emitted_token_follows_the_target_distribution():
    assert min(emitted_token_pvalues(rejection_sample)) > 1e-4


def _planted(bug: str):
    """rejection_sample with one mistake that a reviewer could miss."""

    def sampler(draft_tokens, draft_probs, target_probs, generator):
        batch, k = draft_tokens.shape
        idx = draft_tokens.unsqueeze(-1)
        shift = 1 if bug == "p of the next position" else 0
        p = target_probs[:, shift : k + shift].gather(-1, idx).squeeze(-1)
        q = draft_probs.gather(-1, idx).squeeze(-1)
        u = torch.rand(batch, k, generator=generator, dtype=p.dtype)
        accept = u * q < p
        n = accept.to(torch.int64).cumprod(-1).sum(-1)
        rows = torch.arange(batch)
        at = n + (1 if bug == "residual one position late" else 0)
        at = at.clamp_max(k)
        p_at = target_probs[rows, at]
        q_at = torch.cat([draft_probs, torch.zeros_like(draft_probs[:, :1])], 1)[rows, at]
        residual = p_at if bug == "no residual: resample from p" else (p_at - q_at).clamp_min(0)
        residual = torch.where(residual.sum(-1, keepdim=True) <= 0, p_at, residual)
        last = torch.multinomial(residual / residual.sum(-1, keepdim=True), 1, generator=generator)
        return _verdict(draft_tokens, n, last.squeeze(-1))

    return sampler


@pytest.mark.parametrize(
    "bug", ["p of the next position", "residual one position late", "no residual: resample from p"]
)
def test_the_check_catches_a_planted_bug(bug):
    assert min(emitted_token_pvalues(_planted(bug))) < 1e-6


def test_identical_draft_and_target_accept_everything():
    p = _dists(3, K + 1)
    drafts = torch.stack([torch.multinomial(p[i], 64, replacement=True) for i in range(K)], 1)
    verdict = rejection_sample(drafts, p[:K].expand(64, K, V), p.expand(64, K + 1, V))
    assert verdict.num_accepted == [K] * 64
    assert all(t[:K] == d for t, d in zip(verdict.tokens, drafts.tolist(), strict=True))


def test_greedy_accepts_the_agreeing_prefix_then_the_targets_choice():
    """The seed's case: 5 drafted, the 3rd rejected -> 2 accepted + the target's token."""
    logits = torch.full((1, 6, V), -1.0)
    target_says = [1, 2, 3, 4, 5, 0]
    for i, t in enumerate(target_says):
        logits[0, i, t] = 1.0
    drafts = torch.tensor([[1, 2, 0, 4, 5]])  # the 3rd (0) is not the target's 3
    verdict = greedy_verify(drafts, logits)
    assert verdict.num_accepted == [2] and verdict.tokens == [[1, 2, 3]]
    all_agree = greedy_verify(torch.tensor([target_says[:5]]), logits)
    assert all_agree.num_accepted == [5] and all_agree.tokens == [target_says]


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="shapes disagree"):
        rejection_sample(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, V) / V,
                         torch.ones(2, 3, V) / V)  # fmt: skip
