"""Programmatic dependent launch (Hopper): the next kernel starts before this one ends.

A batch-1 decode step is ~300 small kernels in a row, a few microseconds each, and each pays a
launch and a ramp-up (programs placed on SMs, first loads in flight) while HBM sits idle. On
sm_90 a kernel launched with `launch_pdl=True` may start as soon as every program of the kernel
before it has executed `griddepcontrol.launch_dependents`; it must execute `griddepcontrol.wait`
before touching anything that kernel writes (the wait returns once the kernel before has
finished and its writes are visible). What no earlier kernel writes, a layer's weights, may be
loaded before the wait: the next GEMV's weights stream in while this kernel finishes.

The rule every kernel here keeps: loads first, of what the kernel before does not write, then
`pdl_wait(PDL)` (wait, and only then let the next kernel launch), then the rest, stores included.
Because each kernel releases the next only after its own wait, a kernel starts only once the
kernel two before it has finished: so before the wait it may read anything but the outputs of
the kernel just before. That is a layer's weights, and the step's inputs (positions, slots,
context lengths, block tables: copied in before the step's first kernel), not the activations.
It must not store before the wait: the kernel before may still read memory that the allocator
has handed on to this one. Releasing the next kernel before the wait, also safe when every
kernel waits before its first dependent read, measured slower on an H100 (1,213-1,230 against
1,242-1,243 tokens/s at batch 1). Off the GPU, or with MINIRT_PDL=0, the launches are plain ones
and `pdl_wait` compiles to nothing.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

ENABLED = os.environ.get("MINIRT_PDL", "1") != "0"  # the switch for A/B runs


@functools.lru_cache
def _hopper_or_newer(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def launch_args(t: torch.Tensor) -> dict:
    """Keyword arguments for a kernel launch on t's device: the kernel's `PDL` flag, and
    Triton's `launch_pdl` where the GPU has it (sm_90+, not Triton's interpreter)."""
    on = (
        ENABLED
        and t.is_cuda
        and os.environ.get("TRITON_INTERPRET") != "1"
        and _hopper_or_newer(t.device.index if t.device.index is not None else 0)
    )
    return {"PDL": 1, "launch_pdl": True} if on else {"PDL": 0}


@triton.jit
def pdl_wait(PDL: tl.constexpr):
    """Wait for the kernel before (its writes visible), then let the kernel after launch."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
