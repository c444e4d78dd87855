"""Lab 4 (labs/lab04_quantization.ipynb): group-wise INT4 weights, packed as GPTQ packs them, and
a W4A16 GEMV in Triton that dequantizes inside the kernel. Expected answers come from
`minirt.quant.formats` (quantize_int4, pack_int4 / unpack_int4, dequantize_int4): task 1 the
codes and scales (symmetric) and zero points (asymmetric), exact up to rounding ties; task 2 the
packed int32 words bit for bit; task 3 the dequantized weight; task 4 the kernel's y = W x, run
in Triton's interpreter (the grader sets TRITON_INTERPRET=1 for it) on tiny shapes, its launches
counted (a PyTorch fallback fails); task 5 all of it inside every quantized layer of the embedded
draft model, its perplexity against minirt's W4A16 (minirt.grading.lab04_model). Tasks 4 and 5
are played: the worker runs the learner's side, the parent minirt's, and compares. The learner
may not use minirt's INT4 code (`FORBIDDEN`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import torch

from minirt.grading import lab04_model
from minirt.grading.core import CountingKernel, Mismatch, Task
from minirt.grading.guard import Forbidden
from minirt.quant import formats as F

# What the tasks are compared with: minirt's INT4 formats (the notebook imports them as F for its
# demonstrations, in its own cells), the quantized layer and the W4A16 kernel.
FORBIDDEN = Forbidden(
    modules=("minirt.quant", "minirt.kernels"),
    names=(
        "formats",
        "quantize_int4",
        "dequantize_int4",
        "pack_int4",
        "unpack_int4",
        "int4_codes",
        "interleave_int4",
        "Int4Weight",
        "QuantLinear",
        "quantize_model",
        "w4a16_gemm",
        "w4a16_gemm_ref",
        "int4_method",
        "Int4Functions",
    ),
    what="minirt's INT4 formats and W4A16 kernel",
    allow=("quant", "kernels"),  # everyday words; the modules' contents stay refused
)

GROUP_SIZES = (8, 16, 32, 64, 128)


# -- random weights ----------------------------------------------------------------------------
def _weight(rng: random.Random, i: int, max_in: int = 512) -> tuple[torch.Tensor, int, str]:
    """(w [out, in] fp32, group_size, what it is): fixed edge cases first, then random ones."""
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    if i == 0:
        w = torch.tensor([[0.7, -0.1, 0.2, 0.0, -0.35, 0.1, 0.05, -0.7]])
        return w, 8, "one group whose largest |w| (0.7) appears with both signs"
    if i == 1:
        w = torch.rand(3, 32, generator=g) * 0.1 + 0.05  # every value positive
        w[1, :16] = -w[1, :16]  # row 1: first group all negative, second all positive
        w[2, 16:] = 0.0  # a group of zeros: the scale must not divide by zero
        return w, 16, "all-positive, all-negative and all-zero groups"
    gs = rng.choice([gs for gs in GROUP_SIZES if gs <= max_in])
    out_f, groups = rng.randint(1, 12), rng.randint(1, max(1, max_in // gs))
    w = torch.randn(out_f, groups * gs, generator=g) * rng.choice([0.02, 0.1, 1.0])
    note = f"randn * std, [{out_f}, {groups * gs}]"
    if rng.random() < 0.4:
        w += rng.choice([-1, 1]) * w.abs().mean() * 3  # shifted: asymmetric ranges
        note += ", shifted"
    if rng.random() < 0.4:
        r, c = rng.randrange(out_f), rng.randrange(groups * gs)
        w[r, c] *= 20  # an outlier takes over its group's scale
        note += f", outlier at [{r}, {c}]"
    return w, gs, note


def _tensor(got, what: str, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{what} is {type(got).__name__}; expected a torch.Tensor of shape {shape}")
    if tuple(got.shape) != shape:
        raise Mismatch(f"{what} has shape {tuple(got.shape)}; expected {shape}")
    return got.detach().cpu()


def _unpacked(q: F.Int4Weight) -> torch.Tensor:
    return F.unpack_int4(q.packed).long()


def _check_codes(got: torch.Tensor, q: F.Int4Weight, w: torch.Tensor, call: str) -> None:
    """Codes equal minirt's, except where w / scale sits on a rounding tie (either is fine)."""
    want = _unpacked(q)
    got = got.long()
    if ((got < 0) | (got > 15)).any():
        bad = got[(got < 0) | (got > 15)][0].item()
        raise Mismatch(f"{call} returned a code {bad}; INT4 codes lie in 0..15")
    gs = q.group_size
    x = w.reshape(w.shape[0], -1, gs) / q.scales[..., None]  # [out, groups, gs]
    frac = (x - x.floor()).reshape(w.shape)
    tie = (frac - 0.5).abs() < 1e-3
    bad = (got != want) & ~(tie & ((got - want).abs() == 1))
    if bad.any():
        r, c = (int(v) for v in bad.nonzero()[0])
        zero = 8 if q.zeros is None else int(q.zeros[r, c // gs])
        raise Mismatch(
            f"{call}: code[{r}, {c}] is {int(got[r, c])}, minirt says {int(want[r, c])} "
            f"(w = {w[r, c].item():.6g}, group scale {q.scales[r, c // gs].item():.6g}, "
            f"zero point {zero}: a code counts whole steps of the scale from the zero point, "
            "the nearest one, clamped to 0..15)"
        )


def _check_scales(got: torch.Tensor, q: F.Int4Weight, call: str, sym: bool) -> None:
    want = q.scales
    if torch.allclose(got.float(), want, rtol=1e-5, atol=0):
        return
    r, g = (int(v) for v in (~torch.isclose(got.float(), want, rtol=1e-5, atol=0)).nonzero()[0])
    ratio = (got.float()[r, g] / want[r, g]).item()
    if sym:
        why = "one scale per group, which puts its largest |w| exactly on a level of -8..7"
        if abs(ratio - 7 / 8) < 1e-4:
            why = "you divided by 8; the levels run -8..7, so +max|w| has no level +8 to land on"
    else:
        why = (
            "the range always includes 0 (widened to reach it, so that 0.0 is exactly a code: "
            "the zero point) and is spread over the 15 steps between the codes 0 and 15"
        )
    raise Mismatch(
        f"{call}: scales[{r}, {g}] is {got[r, g].item():.6g}, minirt says "
        f"{want[r, g].item():.6g} (x{ratio:.4g}); {why}"
    )


# -- task 1: quantize ----------------------------------------------------------------------------
def check_quantize_sym(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    w, gs, note = _weight(rng, i)
    call = f"quantize_sym(w, group_size={gs}) ({note})"
    q = F.quantize_int4(w, gs, symmetric=True)
    got = learner.quantize_sym(w.clone(), gs)
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise Mismatch(f"{call} returned {type(got).__name__}; expected (codes, scales)")
    codes = _tensor(got[0], "codes", tuple(w.shape))
    scales = _tensor(got[1], "scales", tuple(q.scales.shape))
    _check_scales(scales, q, call, sym=True)
    _check_codes(codes, q, w, call)


def check_quantize_asym(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    w, gs, note = _weight(rng, i)
    call = f"quantize_asym(w, group_size={gs}) ({note})"
    q = F.quantize_int4(w, gs, symmetric=False)
    got = learner.quantize_asym(w.clone(), gs)
    if not isinstance(got, tuple | list) or len(got) != 3:
        raise Mismatch(f"{call} returned {type(got).__name__}; expected (codes, scales, zeros)")
    codes = _tensor(got[0], "codes", tuple(w.shape))
    scales = _tensor(got[1], "scales", tuple(q.scales.shape))
    zeros = _tensor(got[2], "zeros", tuple(q.scales.shape))
    _check_scales(scales, q, call, sym=False)
    if not torch.equal(zeros.long(), q.zeros.long()):
        r, g = (int(v) for v in (zeros.long() != q.zeros.long()).nonzero()[0])
        raise Mismatch(
            f"{call}: zeros[{r}, {g}] is {zeros[r, g].item()}, minirt says {q.zeros[r, g].item()}"
            f"; the zero point is the code that stands for 0.0: a whole number of steps above "
            "the bottom of the range, in 0..15"
        )
    _check_codes(codes, q, w, call)


# -- task 2: packing -----------------------------------------------------------------------------
def _codes(rng: random.Random, i: int) -> tuple[torch.Tensor, str]:
    fixed = [
        (torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0]]), "column 0 = 1, the rest 0"),
        (torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7]]), "columns 0..7 = 0..7"),
        (torch.tensor([[0, 0, 0, 0, 0, 0, 0, 8]]), "column 7 = 8: the word's sign bit"),
        (torch.full((2, 16), 15), "every code 15"),
    ]
    if i < len(fixed):
        return fixed[i][0].to(torch.uint8), fixed[i][1]
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    rows, words = rng.randint(1, 6), rng.randint(1, 8)
    return torch.randint(0, 16, (rows, 8 * words), generator=g, dtype=torch.uint8), "random"


def _hex(words: torch.Tensor) -> str:
    return "[" + ", ".join(f"0x{int(v) & 0xFFFFFFFF:08x}" for v in words.flatten()[:4]) + "]"


def check_pack(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    codes, note = _codes(rng, i)
    want = F.pack_int4(codes)
    call = f"pack(codes) ({note}, codes[0, :8] = {codes[0, :8].tolist()})"
    got = _tensor(learner.pack(codes.clone()), "pack(codes)", tuple(want.shape))
    if got.dtype != torch.int32:
        raise Mismatch(f"{call} returned {got.dtype}; pack into torch.int32 words")
    if not torch.equal(got, want):
        why = "column 8j + k goes to bits 4k..4k+3 of word j (k = 0: the lowest nibble)"
        flipped = F.pack_int4(codes.reshape(-1, 8).flip(-1).reshape(codes.shape))
        if torch.equal(got, flipped):
            why = "your nibbles run the other way: " + why
        raise Mismatch(f"{call} returned words {_hex(got)}, minirt packs {_hex(want)}: {why}")
    back = _tensor(learner.unpack(want.clone()), "unpack(packed)", tuple(codes.shape))
    if not torch.equal(back.long(), codes.long()):
        r, c = (int(v) for v in (back.long() != codes.long()).nonzero()[0])
        why = f"code {int(back[r, c])} instead of {int(codes[r, c])} at [{r}, {c}]"
        if (back.long() < 0).any() or (back.long() > 15).any():
            why += (
                "; a code outside 0..15: >> on a negative int32 drags the sign bit in from the "
                "left, mask each nibble with & 0xF"
            )
        raise Mismatch(f"unpack(pack of {note}) gives {why}")


# -- task 3: dequantize --------------------------------------------------------------------------
def check_dequantize(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    w, gs, note = _weight(rng, i)
    sym = i % 2 == 0
    q = F.quantize_int4(w, gs, symmetric=sym)
    want = F.dequantize_int4(q)
    zeros = None if sym else q.zeros.clone()
    call = (
        f"dequantize(packed, scales, {'None' if sym else 'zeros'}, group_size={gs}) ({note}, "
        f"{'symmetric' if sym else 'asymmetric'})"
    )
    got = learner.dequantize(q.packed.clone(), q.scales.clone(), zeros, gs)
    got = _tensor(got, call, tuple(w.shape)).float()
    tol = 1e-6 * want.abs().max().item() + 1e-12
    if torch.allclose(got, want, rtol=1e-5, atol=tol):
        return
    r, c = (int(v) for v in (~torch.isclose(got, want, rtol=1e-5, atol=tol)).nonzero()[0])
    z = 8 if sym else int(q.zeros[r, c // gs])
    s = q.scales[r, c // gs].item()
    code = int(_unpacked(q)[r, c])
    why = f"w = (code - zero) * scale = ({code} - {z}) * {s:.6g}"
    if abs(got[r, c].item() - (code * s - z)) < 1e-6 * max(1.0, abs(z)):
        why += "; you subtracted the zero point after scaling: it is a code, subtract it first"
    elif sym and abs(got[r, c].item() - code * s) < 1e-9 + 1e-6 * abs(code * s):
        why += "; symmetric weights have no zeros tensor, their zero point is the code 8"
    raise Mismatch(
        f"{call}: w[{r}, {c}] is {got[r, c].item():.6g}, minirt says {want[r, c].item():.6g}: {why}"
    )


# -- task 4: the W4A16 GEMV in Triton -----------------------------------------------------------
@contextmanager
def launches_counted(learner: SimpleNamespace) -> Iterator[CountingKernel]:
    """The learner's kernel, counting its launches, where `w4a16_gemv` finds it (the notebook's
    namespace) while the block runs; a launcher that never launches it fails the task."""
    from triton.runtime.jit import KernelInterface  # imported here: only tasks 4-5 need triton

    kernel = learner.w4a16_gemv_kernel
    if not isinstance(kernel, KernelInterface):
        raise Mismatch(
            f"w4a16_gemv_kernel is {type(kernel).__name__}; it must be a "
            "@triton.jit kernel (w4a16_gemv launches it)"
        )
    where = getattr(learner.w4a16_gemv, "__globals__", {})  # the notebook's namespace
    counting = CountingKernel(kernel)
    if where.get("w4a16_gemv_kernel") is kernel:
        where["w4a16_gemv_kernel"] = counting
    try:
        yield counting
    finally:
        if where.get("w4a16_gemv_kernel") is counting:
            where["w4a16_gemv_kernel"] = kernel


def draw_gemv(rng: random.Random, i: int) -> dict:
    """Case `i`: a weight (both kinds, every group size), quantized by minirt, and an fp16 x."""
    w, gs, note = _weight(rng, i, max_in=256)
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    x = torch.randn(w.shape[1], generator=g).to(torch.float16)  # [in]
    return {"w": w, "group_size": gs, "note": note, "sym": i % 2 == 1, "x": x}


def _quantized(case: dict) -> F.Int4Weight:
    return F.quantize_int4(case["w"], case["group_size"], symmetric=case["sym"])


def play_gemv(learner: SimpleNamespace, case: dict) -> dict:
    """The learner's launcher on minirt's packed weight: y, and how often the kernel ran."""
    q = _quantized(case)
    zeros = None if case["sym"] else q.zeros.clone()
    with launches_counted(learner) as counting:
        y = learner.w4a16_gemv(
            case["x"].clone(), q.packed.clone(), q.scales.clone(), zeros, q.group_size
        )
    return {"y": y, "launches": counting.launches}


def expect_gemv(case: dict) -> dict:
    return {"y": F.dequantize_int4(_quantized(case)) @ case["x"].float()}  # [out] fp32


def compare_gemv(got: dict, want: dict, case: dict) -> None:
    w, gs, sym = case["w"], case["group_size"], case["sym"]
    call = (
        f"w4a16_gemv(x, packed, scales, {'None' if sym else 'zeros'}, group_size={gs}) "
        f"(W [{w.shape[0]}, {w.shape[1]}]: {case['note']}, {'symmetric' if sym else 'asymmetric'})"
    )
    if got["launches"] == 0:
        raise Mismatch(
            f"{call}: w4a16_gemv_kernel was never launched; the task grades the Triton kernel, "
            "not a PyTorch fallback (w4a16_gemv must launch it: w4a16_gemv_kernel[grid](...))"
        )
    y, want = _tensor(got["y"], call, (w.shape[0],)).float(), want["y"]
    weight = F.dequantize_int4(_quantized(case))
    tol = 1e-4 * (weight.abs() @ case["x"].float().abs()).max().item() + 1e-6
    bad = (y - want).abs() > tol
    if bad.any():
        r = int(bad.nonzero()[0])
        raise Mismatch(
            f"{call}: y[{r}] is {y[r].item():.6g}, minirt's dequantize_int4(W) @ x says "
            f"{want[r].item():.6g} (max error {(y - want).abs().max().item():.3g}, allowed "
            f"{tol:.3g}); every row ({w.shape[0]}) and every input ({w.shape[1]}) must count once"
        )


# -- task 5: your INT4 in every quantized layer of the model ------------------------------------
def play_model(learner: SimpleNamespace, case: dict) -> dict:
    """The draft quantized with the learner's quantizer and packing, run on the learner's GEMV
    (minirt.quant.linear's plug point, `int4_method`)."""
    from minirt.quant.linear import int4_method

    quantize = learner.quantize_sym if case["sym"] else learner.quantize_asym
    with launches_counted(learner) as counting:
        method = int4_method(
            quantize, learner.pack, learner.w4a16_gemv, case["group_size"], case["sym"]
        )
        out = lab04_model.run(method, case)
    return out | {"launches": counting.launches}


def expect_model(case: dict) -> dict:
    return lab04_model.run(lab04_model.METHODS[case["group_size"], case["sym"]], case)


INTERPRET = (("TRITON_INTERPRET", "1"),)
TASKS = [
    Task("1a", "quantize_sym", 2, ("quantize_sym",), check_quantize_sym, num_cases=30, pure=True),
    Task(
        "1b", "quantize_asym", 2, ("quantize_asym",), check_quantize_asym, num_cases=30, pure=True
    ),
    Task("2", "pack, unpack", 2, ("pack", "unpack"), check_pack, num_cases=30, pure=True),
    Task("3", "dequantize", 2, ("dequantize",), check_dequantize, num_cases=30, pure=True),
    Task(
        "4",
        "w4a16_gemv in Triton",
        4,
        ("w4a16_gemv", "w4a16_gemv_kernel"),
        None,
        num_cases=8,
        env=INTERPRET,
        draw=draw_gemv,
        play=play_gemv,
        expect=expect_gemv,
        compare=compare_gemv,
    ),
    Task(
        "5",
        "your INT4 in every layer of the model",
        4,
        ("quantize_sym", "quantize_asym", "pack", "w4a16_gemv", "w4a16_gemv_kernel"),
        None,
        num_cases=2,
        env=INTERPRET,
        draw=lab04_model.draw,
        play=play_model,
        expect=expect_model,
        compare=lab04_model.compare,
        seconds=120,  # a model in Triton's interpreter: ~12 s on a 2-core machine, more on some
    ),
]
