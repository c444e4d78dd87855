"""Kernels: each is a plain-PyTorch reference (`*_ref`, the spec) and its Triton twin.

One concept per file, reference and Triton launcher side by side with the same signature:
`store_kv`, `decode_attention` (split-K flash-decoding), `prefill_attention` (causal, varlen,
paged), `rms_norm` (+ residual), `activation.silu_mul`, `rotary.rope`; and for the GEMM chapter
`tiled_gemm` (`matmul_ref`, then naive, tiled and tile-size-as-constexpr Triton steps mirroring
the CUDA series in minirt/bench/smem_gemm.py). `backend` picks which set the model calls. On a
CPU, the Triton kernels run under TRITON_INTERPRET=1 (set it before importing this package),
where `print` inside a kernel works.
"""

from minirt.kernels.paged_attention import paged_attention_ref
from minirt.kernels.store_kv import store_kv_ref

__all__ = ["paged_attention_ref", "store_kv_ref"]
