"""A GPU as two numbers: memory bandwidth and peak FLOP/s (the roofline's axes).

Datasheet figures, not measurements; the roofline (minirt.tools.roofline) and the quantized-GEMM
speed model (minirt.quant.speed) both price work with them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    name: str
    mem_bandwidth: float  # bytes/s
    peak_flops: float  # FLOP/s at the dtype the matmuls use

    @property
    def ridge_point(self) -> float:
        """FLOPs per byte above which a kernel is compute-bound."""
        return self.peak_flops / self.mem_bandwidth


# NVIDIA H100 SXM5 datasheet: 3.35 TB/s HBM3, 989 TFLOP/s dense BF16 (1,979 with sparsity).
H100_SXM = Hardware("H100 SXM (datasheet)", 3.35e12, 989e12)
