"""Measuring a trained model: held-out loss (nats/byte), draft/target agreement, greedy samples.

Agreement is teacher-forced: the share of positions of held-out text where both models' argmax
agree, a proxy for greedy speculative decoding's acceptance. `python -m minirt.model.train eval`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from minirt.model.tokenizer import PAD_ID


def autocast(device: torch.device):
    # bf16 on CUDA for speed; CPU stays in fp32 (CPU bf16 autocast is slow and less exact).
    return torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")


def load_model(folder: Path, device: torch.device):
    # bf16 weights feed CUDA autocast directly; on CPU compute in fp32.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device)


def eval_windows(val: torch.Tensor, seq_len: int, max_tokens: int) -> torch.Tensor:
    """Non-overlapping [n, seq_len + 1] windows from the start of the held-out ids."""
    n = max(1, min(val.numel() - 1, max_tokens) // seq_len)
    idx = torch.arange(n, device=val.device)[:, None] * seq_len
    return val[idx + torch.arange(seq_len + 1, device=val.device)]


@torch.no_grad()
def evaluate(model, val, seq_len: int, max_tokens: int, device, batch: int = 16) -> float:
    """Held-out cross-entropy in nats per byte (eos targets are not bytes, so they are skipped)."""
    model.eval()
    total, count = 0.0, 0
    for w in eval_windows(val, seq_len, max_tokens).split(batch):
        with autocast(device):
            logits = model(input_ids=w[:, :-1], use_cache=False).logits.float()
        nll = F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="none")
        is_byte = w[:, 1:].flatten() < 256
        total, count = total + nll[is_byte].sum().item(), count + int(is_byte.sum())
    return total / max(1, count)


@torch.no_grad()
def agreement(draft, target, val, seq_len: int, max_tokens: int, device, batch: int = 16) -> float:
    """Teacher-forced greedy agreement: share of positions where argmax(draft) == argmax(target)."""
    draft.eval(), target.eval()
    same, count = 0, 0
    for w in eval_windows(val, seq_len, max_tokens).split(batch):
        with autocast(device):
            d = draft(input_ids=w[:, :-1], use_cache=False).logits.argmax(-1)
            t = target(input_ids=w[:, :-1], use_cache=False).logits.argmax(-1)
        same, count = same + int((d == t).sum()), count + d.numel()
    return same / count


SAMPLE_PROMPTS = ["def fib(n):", "import os\n", "class "]


@torch.no_grad()
def greedy_samples(model, device, new_tokens: int) -> list[dict]:
    """Greedy continuations of a few code prompts, for the card (and a quick look by eye)."""
    model.eval()
    out = []
    for prompt in SAMPLE_PROMPTS:
        ids = torch.tensor([list(prompt.encode())], device=device)
        gen = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=PAD_ID)
        text = bytes(t for t in gen[0, ids.shape[1] :].tolist() if t < 256)
        out.append({"prompt": prompt, "continuation": text.decode("utf-8", "replace")})
    return out
