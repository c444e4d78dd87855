"""Which kernels the model calls: the PyTorch references, their Triton twins, or the CPU path.

A `KernelBackend` is a plain bundle of functions with the references' signatures; the engine
picks one when it starts (`get_backend`) and hands it to the model (`CausalLM.use_kernels`).
CUDA -> Triton; CPU -> the CPU path (`minirt.kernels.cpu`: the references' arithmetic in PyTorch's
fused operators), the references themselves ("torch"), or Triton under TRITON_INTERPRET=1 to step
through a kernel with print(). Notebooks 04 (FlashAttention) and 05 (profiling) compare them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from minirt.kernels import (
    activation,
    cpu,
    decode_attention,
    gemv,
    lm_head,
    prefill_attention,
    qk_norm_rope,
    rms_norm,
    rotary,
)
from minirt.kernels import store_kv as store_kv_mod


@dataclass(frozen=True)
class KernelBackend:
    """The model's kernels by role, each with the signature of its `*_ref`. A learner's backend
    is one of these, e.g. `dataclasses.replace(TORCH, name="mine", decode_attention=my_fn)`,
    passed as `LLM(kernel_backend=...)`."""

    name: str  # "torch" | "triton" | a learner's
    store_kv: Callable
    decode_attention: Callable
    prefill_attention: Callable
    rms_norm: Callable
    silu_mul: Callable
    rope: Callable
    qk_norm_rope: Callable
    linear: Callable = gemv.linear_ref  # y = x @ W.T (+ b): every projection but the LM head
    # A fused role runs in place of its parts (qk_norm_rope, then store_kv); None: the parts.
    # `get_backend` drops it when a part was replaced, so a learner's store_kv always runs.
    qk_norm_rope_store: Callable | None = None
    silu_mul_linear: Callable | None = None  # the MLP's silu_mul, then its down projection
    rms_norm_linear: Callable | None = None  # add + RMSNorm, then the projection after it
    linear_argmax: Callable | None = None  # the LM head, then each row's argmax (greedy)
    # Fixed launch shapes, whatever the data: a decode step can be captured in a CUDA graph
    # (the references index with data-dependent masks; with them the engine stays eager).
    capturable: bool = False


TORCH = KernelBackend(
    name="torch",
    store_kv=store_kv_mod.store_kv_ref,
    decode_attention=decode_attention.decode_attention_ref,
    prefill_attention=prefill_attention.prefill_attention_ref,
    rms_norm=rms_norm.rms_norm_ref,
    silu_mul=activation.silu_mul_ref,
    rope=rotary.rope_ref,
    qk_norm_rope=qk_norm_rope.qk_norm_rope_ref,
)

TRITON = KernelBackend(
    name="triton",
    store_kv=store_kv_mod.store_kv,
    decode_attention=decode_attention.decode_attention,
    prefill_attention=prefill_attention.prefill_attention,
    rms_norm=rms_norm.rms_norm,
    silu_mul=activation.silu_mul,
    rope=rotary.rope,
    qk_norm_rope=qk_norm_rope.qk_norm_rope,
    qk_norm_rope_store=qk_norm_rope.qk_norm_rope_store,
    linear=gemv.linear,
    silu_mul_linear=gemv.silu_mul_linear,
    rms_norm_linear=gemv.rms_norm_linear,
    linear_argmax=lm_head.linear_argmax,
    capturable=True,
)

# The references, but for the roles a batch-1 CPU step calls most (minirt.kernels.cpu)
CPU = replace(
    TORCH,
    name="cpu",
    store_kv=cpu.store_kv_cpu,
    decode_attention=cpu.decode_attention_cpu,
    prefill_attention=cpu.prefill_attention_cpu,
    rms_norm=cpu.rms_norm_cpu,
    rope=cpu.rope_cpu,
    qk_norm_rope=cpu.qk_norm_rope_cpu,
)

BACKENDS = {"torch": TORCH, "triton": TRITON, "cpu": CPU}
FUSED = {  # fused role -> the roles it runs
    "qk_norm_rope_store": ("qk_norm_rope", "store_kv"),
    "silu_mul_linear": ("silu_mul", "linear"),
    "rms_norm_linear": ("rms_norm", "linear"),
    "linear_argmax": ("linear",),
}


def get_backend(
    name: str | KernelBackend, device: torch.device | str, dtype: torch.dtype | None = None
) -> KernelBackend:
    """ "auto" -> Triton on CUDA, the CPU path on CPU; or ask for "torch"/"triton"/"cpu" by name,
    or pass a KernelBackend of your own (checked: every role must be callable)."""
    device = torch.device(device)
    if not isinstance(name, str):
        return _checked(name)
    if name == "auto":
        name = "triton" if device.type == "cuda" else "cpu"
    if name not in BACKENDS:
        known = ", ".join(["auto", *BACKENDS])
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {known}")
    if name == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            "Triton kernels need a CUDA device; on the CPU set TRITON_INTERPRET=1 before "
            "starting Python (Triton's interpreter, slow but exact) or use kernel_backend='torch'"
        )
    if name == "triton" and device.type != "cuda" and dtype == torch.bfloat16:
        raise ValueError(  # measured with Triton 3.7: NaN and 1e38 where the reference has 0.5
            "Triton's interpreter computes bfloat16 wrongly (NumPy has no bfloat16); run the "
            "Triton kernels on the CPU with dtype='float32' or 'float16'"
        )
    return BACKENDS[name]


def _checked(backend) -> KernelBackend:
    roles = [f.name for f in fields(KernelBackend) if f.name not in ("name", "capturable")]
    missing = [r for r in roles if r not in FUSED and not callable(getattr(backend, r, None))]
    if missing:
        raise ValueError(
            f"kernel_backend {getattr(backend, 'name', backend)!r} lacks callable "
            f"{', '.join(missing)}; build one with dataclasses.replace(minirt.kernels.backend."
            "TORCH, name=..., <role>=your_function)"
        )
    for fused, parts in FUSED.items():  # a fused role stands for its parts only if they are
        mine = getattr(backend, fused, None)  # the ones it fuses
        if mine is getattr(TRITON, fused) and any(
            getattr(backend, p) is not getattr(TRITON, p) for p in parts
        ):
            backend = replace(backend, **{fused: None})
    return backend
