"""Attention over the paged KV pool: project, normalise (Qwen3), rotate, store K/V, attend.

The layer never sees a whole sequence: it gets this step's new tokens and an AttentionMetadata
that says where their K/V go (`slot_mapping`) and which blocks hold each sequence's past
(`block_tables`, `context_lens`). Notebook 00 (tour) follows one step through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minirt.config import ModelConfig
from minirt.kernels import paged_attention_ref, store_kv_ref
from minirt.model.layers import RMSNorm, RotaryEmbedding


@dataclass
class AttentionMetadata:
    """What attention needs to find the KV of a ragged batch (vLLM's vocabulary)."""

    slot_mapping: torch.Tensor  # [num_tokens] int64: where each new token's K/V is stored
    query_start_loc: torch.Tensor  # [num_seqs + 1] int64: sequence s owns tokens [qsl[s], qsl[s+1])
    context_lens: torch.Tensor  # [num_seqs] int64: tokens in the pool after this step
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32, padded with -1
    max_query_len: int  # host-side copies of the maxima, so no layer waits on the device
    max_context_len: int


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding):
        super().__init__()
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
        )
        bias = c.attention_bias
        self.q_proj = nn.Linear(c.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(c.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(c.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, c.hidden_size, bias=False)
        if c.qk_norm:  # Qwen3 normalises each head's q and k before RoPE
            self.q_norm = RMSNorm(self.head_dim, c.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, c.rms_norm_eps)
        self.qk_norm = c.qk_norm
        self.rotary = [rotary]  # a list so the shared module is not registered once per layer
        self.scale = self.head_dim**-0.5
        # Views into the preallocated pool, bound by the ModelRunner:
        # [num_blocks, block_size, kv_heads, head_dim] each.
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        n = x.shape[0]  # x: [num_tokens, hidden]
        q = self.q_proj(x).view(n, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(n, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(n, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        rotary = self.rotary[0]
        q, k = rotary(positions, q), rotary(positions, k)
        store_kv_ref(k, v, self.k_cache, self.v_cache, meta.slot_mapping)
        o = paged_attention_ref(
            q,
            self.k_cache,
            self.v_cache,
            meta.block_tables,
            meta.context_lens,
            meta.query_start_loc,
            self.scale,
            meta.max_query_len,
            meta.max_context_len,
        )
        return self.o_proj(o.reshape(n, self.num_heads * self.head_dim))
