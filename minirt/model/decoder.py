"""The decoder: embed -> N x (RMSNorm, attention, RMSNorm, SwiGLU, residuals) -> norm -> logits.

Qwen3 and Llama differ only in flags of ModelConfig (q/k-norm, biases, tied embeddings). The
model takes a flat batch of new tokens from many sequences; logits are computed only for the
rows the sampler needs. Compare with transformers' modeling_qwen3.py side by side.
"""

from __future__ import annotations

import torch
from torch import nn

from minirt.config import ModelConfig
from minirt.kernels import lm_head
from minirt.kernels.backend import KernelBackend
from minirt.model.attention import Attention, AttentionMetadata
from minirt.model.layers import MLP, Linear, RMSNorm, RotaryEmbedding, norm_linear, watched


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, rotary)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size)

    def forward(self, positions, x, residual, meta: AttentionMetadata):
        q, residual = self.before_attention(positions, x, residual, meta)
        return self.after_attention(self.self_attn.attend(q, meta), residual)

    def before_attention(self, positions, x, residual, meta: AttentionMetadata):
        """Norm, then q/k/v (K and V stored): the queries, and the residual stream."""
        # The residual stream is carried beside x so each "add, then norm" is one fused kernel,
        # and on the GPU at small batch one kernel with the projection after it (norm_linear).
        attn = self.self_attn
        qkv, residual = norm_linear(self.input_layernorm, attn.qkv_proj, x, residual)
        return attn.queries(positions, qkv, meta), residual

    def after_attention(self, o, residual):
        """Output projection, add and norm, the MLP: the layer's output and residual stream."""
        o = self.self_attn.o_proj(o)
        gate_up, residual = norm_linear(self.post_attention_layernorm, self.mlp.gate_up_proj, o,
                                        residual)  # fmt: skip
        return self.mlp.down(gate_up), residual


class DecoderModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary = RotaryEmbedding(
            config.head_dim, config.max_position_embeddings, config.rope_theta
        )
        self.layers = nn.ModuleList(
            DecoderLayer(config, self.rotary) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids, positions, meta: AttentionMetadata) -> torch.Tensor:
        x, residual = self.embed_tokens(input_ids), None  # [num_tokens, hidden]
        for layer in self.layers:
            x, residual = layer(positions, x, residual, meta)
        return self.norm(x, residual)[0]


class CausalLM(nn.Module):
    """Decoder + LM head. Parameter names follow Hugging Face checkpoints exactly."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = DecoderModel(config)
        # the backend's `linear` too: at batch 1 minirt's GEMV reads the 311 MB of Qwen3-0.6B's
        # LM head 5 % faster than cuBLAS (H100: 99.6 against 104.8 us)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:  # [num_tokens, hidden]
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden: torch.Tensor, fp32: bool = True) -> torch.Tensor:
        """[rows, vocab], fp32, or in the weights' dtype with fp32=False (the engine's greedy
        argmax reads those directly: at batch 256 the fp32 copy is 230 MB of traffic a step)."""
        logits = self.lm_head(hidden)
        return logits.float() if fp32 else logits

    def _head_argmax(self):
        """The backend's LM head + argmax kernel (`linear_argmax`), where it has one and the
        head is a plain Linear that no hook watches; else None."""
        head = self.lm_head
        fused = head.kernels.linear_argmax
        return fused if fused is not None and type(head) is Linear and not watched(head) else None

    def argmax_in_head(self, rows: int) -> bool:
        """Whether `logits_and_argmax` at `rows` rows takes the argmax inside the LM head's
        kernel, for one small kernel more (a decode graph then returns it): with a backend that
        fuses it, up to the rows its kernels take (`lm_head.fuses_argmax`). Past that it would be
        an argmax of its own, which the sampler runs only where a step samples."""
        return self._head_argmax() is not None and lm_head.fuses_argmax(rows)

    def logits_and_argmax(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits in the weights' dtype, each row's argmax: the greedy token), the argmax taken
        inside the LM head's kernel where the backend fuses it (`linear_argmax`: on the GPU its
        GEMV at one or two rows, its tensor-core head past that, keep each program's largest
        logit, and one small kernel picks among them), else torch's argmax over the logits."""
        fused = self._head_argmax()
        if fused is not None:
            return fused(hidden, self.lm_head.weight, self.lm_head.bias)
        logits = self.lm_head(hidden)
        return logits, logits.argmax(-1)

    def use_kernels(self, backend: KernelBackend) -> None:
        """Run every layer on `backend`'s kernels (minirt.kernels.backend)."""
        for module in self.modules():
            if hasattr(module, "kernels"):
                module.kernels = backend

    def bind_kv_cache(self, kv_pool: torch.Tensor) -> None:
        """Point every layer at its slice of the pool: kv_pool[0 or 1, layer]."""
        for i, layer in enumerate(self.model.layers):
            layer.self_attn.k_cache = kv_pool[0, i]
            layer.self_attn.v_cache = kv_pool[1, i]
