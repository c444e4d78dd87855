"""First-call time of the attention kernels for block tables of several widths (a new Triton
specialisation compiles: ~1 s; a cached kernel: ~0.1 ms)."""

import time

import torch

from minirt.kernels.decode_attention import decode_attention
from minirt.kernels.prefill_attention import prefill_attention

torch.manual_seed(0)
H, KVH, D, BS = 16, 8, 128, 16
nb = 4096
kc = torch.randn(nb, BS, KVH, D, device="cuda", dtype=torch.bfloat16)
vc = torch.randn_like(kc)
out = []
for width in (5, 1, 16, 7, 32, 64, 9, 48, 3):
    ctx = width * BS
    tables = torch.randint(0, nb, (2, width), device="cuda", dtype=torch.int32)
    lens = torch.tensor([ctx, ctx], device="cuda", dtype=torch.int32)
    q = torch.randn(2 * 8, H, D, device="cuda", dtype=torch.bfloat16)
    qsl = torch.tensor([0, 8, 16], device="cuda", dtype=torch.int32)
    torch.cuda.synchronize()
    t = time.perf_counter()
    prefill_attention(q, kc, vc, tables, lens, qsl, D**-0.5, 8, ctx)
    torch.cuda.synchronize()
    p_ms = (time.perf_counter() - t) * 1e3
    qd = torch.randn(2, H, D, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    t = time.perf_counter()
    decode_attention(qd, kc, vc, tables, lens, D**-0.5, ctx)
    torch.cuda.synchronize()
    d_ms = (time.perf_counter() - t) * 1e3
    out.append(
        {
            "width": width,
            "prefill_first_call_ms": round(p_ms, 2),
            "decode_first_call_ms": round(d_ms, 2),
        }
    )
    print(out[-1], flush=True)
