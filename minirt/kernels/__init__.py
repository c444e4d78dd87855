"""Kernels: each is a plain-PyTorch reference (`*_ref`, the spec) and, for CUDA, a Triton twin.

The backend is chosen once per engine (`minirt.kernels.backend`); the GPU issue adds the Triton
launchers next to these references with the same signatures.
"""

from minirt.kernels.paged_attention import paged_attention_ref, store_kv_ref

__all__ = ["paged_attention_ref", "store_kv_ref"]
