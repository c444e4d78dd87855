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
from minirt.kernels.backend import TORCH, KernelBackend
from minirt.model.layers import Linear, PackedLinear, RMSNorm, RotaryEmbedding


@dataclass
class AttentionMetadata:
    """What attention needs to find the KV of a ragged batch (vLLM's vocabulary)."""

    slot_mapping: torch.Tensor  # [num_tokens] int64: where each new token's K/V is stored
    query_start_loc: torch.Tensor  # [num_seqs + 1] int64: sequence s owns tokens [qsl[s], qsl[s+1])
    context_lens: torch.Tensor  # [num_seqs] int64: tokens in the pool after this step
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32, padded with -1
    max_query_len: int  # host-side copies of the maxima, so no layer waits on the device
    max_context_len: int  # (an upper bound: a CUDA graph is captured with max_model_len)

    @property
    def is_decode(self) -> bool:
        """Every sequence brings one new token: the decode kernel (and a CUDA graph) applies."""
        return self.max_query_len == 1


class Attention(nn.Module):
    kernels: KernelBackend = TORCH  # CausalLM.use_kernels sets it per model

    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding):
        super().__init__()
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
        )
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        parts = {"q_proj": self.q_size, "k_proj": self.kv_size, "v_proj": self.kv_size}
        self.qkv_proj = PackedLinear(c.hidden_size, parts, bias=c.attention_bias)
        self.o_proj = Linear(self.num_heads * self.head_dim, c.hidden_size, bias=False)
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
        return self.o_proj(self.attend(self.project(positions, x, meta), meta))

    def project(
        self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """q, k, v from x; q and k normalised (Qwen3) and rotated; k and v stored in the pool at
        `meta.slot_mapping`: the queries [num_tokens, heads, head_dim]. Row by row, whatever
        the batch: a CUDA graph may hold it (minirt.engine.cuda_graph)."""
        return self.queries(positions, self.qkv_proj(x), meta)  # x: [num_tokens, hidden]

    def queries(
        self, positions: torch.Tensor, qkv: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """`project` from the packed projection's output [num_tokens, q + k + v]."""
        n = qkv.shape[0]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(n, self.num_heads, self.head_dim)  # views into the packed output
        k = k.view(n, self.num_kv_heads, self.head_dim)
        v = v.view(n, self.num_kv_heads, self.head_dim)
        ops, rotary = self.kernels, self.rotary[0]
        if self.qk_norm and ops.qk_norm_rope_store is not None:  # all of the below, one kernel
            return ops.qk_norm_rope_store(
                positions, q, k, v, self.q_norm.weight, self.k_norm.weight, self.q_norm.eps,
                rotary.cos, rotary.sin, self.k_cache, self.v_cache, meta.slot_mapping,
            )  # fmt: skip
        if self.qk_norm:  # Qwen3: per-head RMSNorm of q and k, then RoPE, as one fused kernel
            q, k = ops.qk_norm_rope(positions, q, k, self.q_norm.weight, self.k_norm.weight,
                                    self.q_norm.eps, rotary.cos, rotary.sin)  # fmt: skip
        else:
            q, k = rotary(positions, q, k)
        ops.store_kv(k, v, self.k_cache, self.v_cache, meta.slot_mapping)  # first: then the
        # new tokens' keys are read through the block table like every cached one
        return q

    def attend(self, q: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Each query against its sequence's cached keys: [num_tokens, heads * head_dim]. The
        one part whose work depends on the batch's contexts (the block tables, their lengths)."""
        ops = self.kernels
        if meta.is_decode:  # one query per sequence: split-K over the context (flash-decoding)
            o = ops.decode_attention(
                q, self.k_cache, self.v_cache, meta.block_tables, meta.context_lens,
                self.scale, meta.max_context_len,
            )  # fmt: skip
        else:  # prefill, chunked prefill, or a mix with decodes: tiles of queries
            o = ops.prefill_attention(
                q, self.k_cache, self.v_cache, meta.block_tables, meta.context_lens,
                meta.query_start_loc, self.scale, meta.max_query_len, meta.max_context_len,
            )  # fmt: skip
        return o.reshape(q.shape[0], self.num_heads * self.head_dim)
