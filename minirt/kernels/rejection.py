"""Speculative sampling's acceptance rule in one kernel: the verify step of a sampled request.

The reference (`minirt.spec.rejection.rejection_sample`) is about thirty small PyTorch operators
for a handful of numbers: gather p_i(x_i) and q_i(x_i), compare with uniforms, count the accepted
guesses, build the residual max(0, p - q) at the first rejection, normalise it and draw from it.
Each operator is a launch of a few microseconds of host time: at batch 1, where a speculative
step of the H100 pair takes ~2.5 ms, that is a visible share of it. Here one program per sequence
does it all: a loop over the k guesses, then two passes over the vocabulary (the residual's
mass, then the draw). The random numbers are drawn by PyTorch before the launch, the same ones in
the same order as the reference (k uniforms, then one exponential per vocabulary entry: the race
that `torch.multinomial` runs), so the kernel returns the reference's very tokens.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rejection_kernel(
    drafts_ptr, q_ptr, p_ptr, u_ptr, race_ptr, out_ptr, k, vocab, BLOCK: tl.constexpr
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    # 1. Accept x_i while u_i * q_i(x_i) < p_i(x_i): n = the guesses before the first "no"
    n = 0
    going = 1
    for i in range(k):
        x = tl.load(drafts_ptr + b * k + i)
        qx = tl.load(q_ptr + (b * k + i) * vocab + x)
        px = tl.load(p_ptr + (b * (k + 1) + i) * vocab + x)
        going = going * (tl.load(u_ptr + b * k + i) * qx < px).to(tl.int32)
        n += going
    # 2. The last token's distribution: max(0, p_n - q_n) (q_k is zero: the bonus draws from p),
    # or p_n itself where the residual has no mass. Pass one sums both.
    p_row = p_ptr + (b * (k + 1) + n) * vocab
    q_row = q_ptr + (b * k + n) * vocab
    has_q = n < k
    res_sum = tl.zeros([BLOCK], tl.float32)
    p_sum = tl.zeros([BLOCK], tl.float32)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < vocab
        p = tl.load(p_row + cols, mask=mask, other=0.0)
        q = tl.load(q_row + cols, mask=mask & has_q, other=0.0)
        res_sum += tl.maximum(p - q, 0.0)
        p_sum += p
    total_res, total_p = tl.sum(res_sum), tl.sum(p_sum)
    use_p = total_res <= 0
    total = tl.where(use_p, total_p, total_res)
    # 3. The draw: argmax of (distribution / its mass) / E, E ~ Exp(1) (torch.multinomial's race)
    best = -1.0
    best_col = 0
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < vocab
        p = tl.load(p_row + cols, mask=mask, other=0.0)
        q = tl.load(q_row + cols, mask=mask & has_q, other=0.0)
        r = tl.where(use_p, p, tl.maximum(p - q, 0.0)) / total
        score = tl.where(mask, r / tl.load(race_ptr + b * vocab + cols, mask=mask, other=1.0), -1.0)
        m = tl.max(score)
        col = start + tl.argmax(score, 0)
        better = m > best  # the first maximum wins, as in torch.argmax
        best_col = tl.where(better, col, best_col)
        best = tl.where(better, m, best)
    # 4. One row out: [n, last token, the guesses] (read back to the host once)
    tl.store(out_ptr + b * (k + 2), n.to(tl.int64))
    tl.store(out_ptr + b * (k + 2) + 1, best_col.to(tl.int64))
    for i in range(k):
        tl.store(out_ptr + b * (k + 2) + 2 + i, tl.load(drafts_ptr + b * k + i))


def rejection_sample_rows(
    draft_tokens: torch.Tensor,  # [batch, k] int64
    draft_probs: torch.Tensor,  # [batch, k, vocab] q
    target_probs: torch.Tensor,  # [batch, k + 1, vocab] p
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[batch, k + 2] int64: per sequence the accepted count, the last token, the k guesses.
    The reference's random numbers, drawn the same way: its tokens exactly."""
    batch, k = draft_tokens.shape
    vocab = target_probs.shape[-1]
    dtype, device = target_probs.dtype, target_probs.device
    u = torch.rand(batch, k, generator=generator, device=device, dtype=dtype)
    race = torch.empty(batch, vocab, device=device, dtype=dtype).exponential_(generator=generator)
    out = torch.empty(batch, k + 2, dtype=torch.int64, device=device)
    drafts = draft_tokens.to(torch.int64).contiguous()
    _rejection_kernel[(batch,)](
        drafts, draft_probs.contiguous(), target_probs.contiguous(), u, race, out, k, vocab,
        BLOCK=min(4096, triton.next_power_of_2(vocab)),
    )  # fmt: skip
    return out
