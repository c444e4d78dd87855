"""Turn logits into tokens: greedy, or temperature -> top-k -> top-p -> a seeded draw.

A request with a seed draws from its own generator, so its tokens do not depend on the rest of
the batch; the others use the engine's generator (EngineConfig.seed).
"""

from __future__ import annotations

import torch

from minirt.sampling_params import SamplingParams


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Scale by temperature, then mask tokens outside top-k and outside the top-p nucleus.
    `logits` is [vocab] or [rows, vocab] (each row filtered alone, with the same params)."""
    logits = logits / params.temperature  # [..., vocab]
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= params.top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token from each row of `probs` ([..., vocab] -> [...] int64, on the same device):
    the token `torch.multinomial(probs, 1, generator=generator)` gives, by its own method (the
    exponential race: argmax of p / E with E ~ Exp(1), the same random numbers), without its
    validity checks: three launches instead of about ten (older PyTorch releases also read the
    checks back to the host, a wait for the GPU at every sampled token)."""
    race = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / race).argmax(-1)


def sample_on_device(
    logits: torch.Tensor,  # [num_rows, vocab] fp32, or bf16/fp16 as the LM head made them
    params: list[SamplingParams],
    generators: list[torch.Generator],
    argmax: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row, [num_rows] int64 where the logits are (nothing is read back, so the
    host can go on): the argmax, or a draw from the row's filtered distribution. 16-bit logits
    give the tokens their fp32 copy would (the argmax reads them as they are: the upcast is exact
    and keeps their order and ties; a drawn row is upcast first). `argmax`: the rows' argmax if
    the forward took it already (the LM head's kernel, `CausalLM.logits_and_argmax`); the
    drawn rows are written into it."""
    out = logits.argmax(-1) if argmax is None else argmax
    for i, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if not p.greedy:
            probs = filter_logits(logits[i].float(), p).softmax(-1)
            out[i] = draw(probs, gen)
    return out


def sample(
    logits: torch.Tensor,  # [num_rows, vocab] fp32
    params: list[SamplingParams],
    generators: list[torch.Generator],
) -> list[int]:
    """The sampler (a named part: `LLM(sampler=fn)` with this signature): the same tokens as
    `sample_on_device`, as Python ints."""
    return sample_on_device(logits, params, generators).tolist()
