"""Speculative sampling's acceptance rule: keep the target's distribution exactly.

The draft proposed tokens x_1..x_k, drawn from its distributions q_1..q_k; one target forward
gave p_1..p_{k+1} at the same positions. Walk the proposals in order (Leviathan et al. 2023,
Chen et al. 2023):
- accept x_i with probability min(1, p_i(x_i) / q_i(x_i));
- at the first rejection, emit one token from the residual norm(max(0, p_i - q_i)) and stop;
- if all k are accepted, emit a bonus token from p_{k+1}.
Each emitted token is then distributed exactly as the target alone would have drawn it, so a
step emits between 1 and k + 1 tokens and never changes what the model says. Greedy: accept x_i
iff it is the target's argmax, and emit the target's argmax at the first mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minirt.kernels.rejection import rejection_sample_rows
from minirt.sampler import draw, filter_logits


@dataclass
class Verdict:
    """Per sequence: how many draft tokens were accepted, and the tokens to append (the
    accepted ones and then the corrected or bonus token: num_accepted + 1 of them)."""

    num_accepted: list[int]
    tokens: list[list[int]]


def rejection_sample(
    draft_tokens: torch.Tensor,  # [batch, k] int64
    draft_probs: torch.Tensor,  # [batch, k, vocab]: q, the distributions they were drawn from
    target_probs: torch.Tensor,  # [batch, k + 1, vocab]: p, from one target forward
    generator: torch.Generator | None = None,
) -> Verdict:
    batch, k = draft_tokens.shape
    if draft_probs.shape[:2] != (batch, k) or target_probs.shape[:2] != (batch, k + 1):
        raise ValueError(
            f"shapes disagree: draft_tokens {tuple(draft_tokens.shape)}, draft_probs "
            f"{tuple(draft_probs.shape)}, target_probs {tuple(target_probs.shape)} (need "
            "[b, k], [b, k, V] and [b, k + 1, V])"
        )
    idx = draft_tokens.unsqueeze(-1)
    p = target_probs[:, :k].gather(-1, idx).squeeze(-1)  # p_i(x_i)
    q = draft_probs.gather(-1, idx).squeeze(-1)  # q_i(x_i) > 0: x_i was drawn from q_i
    u = torch.rand(batch, k, generator=generator, device=p.device, dtype=p.dtype)
    accept = u * q < p  # u < p / q, without dividing
    num_accepted = accept.to(torch.int64).cumprod(-1).sum(-1)  # accepted before the first no
    # The last token: from the residual at the first rejection, or from p_{k+1} (the bonus).
    rows = torch.arange(batch, device=p.device)
    p_at = target_probs[rows, num_accepted]
    q_at = torch.cat([draft_probs, torch.zeros_like(draft_probs[:, :1])], 1)[rows, num_accepted]
    residual = (p_at - q_at).clamp_min(0)
    # p == q leaves no residual (rejection has probability 0, rounding aside): fall back to p
    empty = residual.sum(-1, keepdim=True) <= 0
    residual = torch.where(empty, p_at, residual)
    last = draw(residual / residual.sum(-1, keepdim=True), generator)  # = torch.multinomial's
    return _verdict(draft_tokens, num_accepted, last)


def greedy_verify(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> Verdict:
    """Greedy speculation: accept while the draft agrees with the target's argmax."""
    k = draft_tokens.shape[1]
    best = target_logits.argmax(-1)  # [batch, k + 1]
    agree = (best[:, :k] == draft_tokens).to(torch.int64)
    num_accepted = agree.cumprod(-1).sum(-1)
    last = best.gather(1, num_accepted.unsqueeze(1)).squeeze(1)
    return _verdict(draft_tokens, num_accepted, last)


def _verdict(draft_tokens, num_accepted, last) -> Verdict:
    # One read back to the host for the three (each read waits for the GPU)
    rows = torch.cat([num_accepted[:, None], last[:, None], draft_tokens], 1).tolist()
    return _from_rows(rows)


def _from_rows(rows: list[list[int]]) -> Verdict:
    """A Verdict from rows [num_accepted, last token, guesses...]."""
    return Verdict([r[0] for r in rows], [r[2 : 2 + r[0]] + [r[1]] for r in rows])


def verify(drafts, q, p_logits, params, generator=None) -> Verdict:
    """The speculative verifier (a named part: `LLM(spec_verifier=fn)` with this signature).
    drafts [b, k]; p_logits [b, k + 1, V]: the target's logits after x_0 and each guess. Greedy
    (b >= 1): accept while each guess is the argmax. Sampled (b = 1): q [k, V] the draft's
    distributions, p through the request's filter, exact rejection sampling with `generator`."""
    if params.greedy:
        return greedy_verify(drafts, p_logits)
    p = filter_logits(p_logits[0], params).softmax(-1)  # [k + 1, V]: each row alone
    if p.is_cuda:  # the same rule and random numbers in one kernel: the same tokens, one launch
        return _from_rows(rejection_sample_rows(drafts, q[None], p[None], generator).tolist())
    return rejection_sample(drafts, q.unsqueeze(0), p.unsqueeze(0), generator=generator)
