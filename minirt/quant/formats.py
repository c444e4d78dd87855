"""Weight and activation number formats for quantized inference: INT4 groups, FP8 E4M3, INT8.

Each format stores a low-precision tensor plus the scales that map it back to real numbers;
`dequantize` is the spec a fused kernel must match. The invariant: inside the format's range, the
round trip errs by at most half a quantization step (INT) or one rounding of the mantissa (FP8).
These are the plain-PyTorch references of the quantization chapter (Triton kernels come later).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite E4M3 value (the "fn" variant has no infinities)
INT8_MAX = 127  # symmetric: -127..127, so +x and -x round to mirror images
_TINY = 1e-12  # a zero row or group gets this scale instead of dividing by zero
NIBBLES_PER_INT32 = 8


def _scales(amax: torch.Tensor, qmax: float) -> torch.Tensor:
    """amax / qmax, at least _TINY. The divisor is a tensor so that every device divides
    exactly, as the Triton kernels do: a GPU divides a tensor by a Python number as a multiply
    by its reciprocal, which can differ in the last bit and move a code."""
    return (amax / torch.full_like(amax, qmax)).clamp(min=_TINY)


def _check_matrix(w: torch.Tensor, what: str) -> None:
    if w.dim() != 2:
        raise ValueError(
            f"{what} expects a 2-D weight [out_features, in_features], got shape "
            f"{tuple(w.shape)}; pass a Linear's .weight"
        )


# -- INT4, group-wise, 8 values per int32 ------------------------------------------------------


@dataclass
class Int4Weight:
    """An [out, in] matrix as 4-bit codes with one scale (and zero point) per `group_size` inputs.

    packed: [out, in // 8] int32. Codes run along in_features, GPTQ order: input column 8*j + k
      sits in bits [4k, 4k + 4) of packed[:, j] (k = 0 is the lowest nibble). With `interleaved`
      (the Triton kernel's order, see `interleave_columns`) the columns are permuted within each
      group before packing.
    scales: [out, in // group_size] fp32.
    zeros:  [out, in // group_size] uint8 codes in 0..15 (asymmetric), or None (symmetric: the
      implicit zero point is 8, codes 0..15 stand for -8..7).
    Value = (code - zero) * scale.
    """

    packed: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    shape: tuple[int, int]
    group_size: int
    interleaved: bool = False

    @property
    def symmetric(self) -> bool:
        return self.zeros is None


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """[out, in] codes in 0..15 -> [out, in // 8] int32 (nibble k of word j = column 8j + k)."""
    if codes.shape[-1] % NIBBLES_PER_INT32:
        raise ValueError(f"in_features ({codes.shape[-1]}) must be a multiple of 8 to pack int4")
    if codes.numel() and (codes.min() < 0 or codes.max() > 15):
        raise ValueError("int4 codes must lie in 0..15 before packing")
    c = codes.to(torch.int64).reshape(*codes.shape[:-1], -1, NIBBLES_PER_INT32)
    shifts = torch.arange(0, 32, 4, device=codes.device, dtype=torch.int64)
    word = (c << shifts).sum(-1)  # in [0, 2^32): wrap the top half to negative int32
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of pack_int4: [out, in // 8] int32 -> [out, in] uint8 codes in 0..15."""
    shifts = torch.arange(0, 32, 4, device=packed.device, dtype=torch.int32)
    # An arithmetic shift drags the sign bit in from the left; the mask cuts it off again.
    codes = (packed.unsqueeze(-1) >> shifts) & 0xF  # [out, in // 8, 8]
    return codes.reshape(*packed.shape[:-1], -1).to(torch.uint8)


def interleave_columns(codes: torch.Tensor, group_size: int, inverse: bool = False) -> torch.Tensor:
    """[out, in] codes -> the same codes with the columns of each group permuted so that, packed
    in GPTQ order, nibbles k and k + 4 (k < 4) of the group's word w hold the adjacent columns
    2p and 2p + 1, p = k * (group_size / 8) + w.

    Why (the W4A16 GEMV, minirt.kernels.w4a16_gemm): on the GPU the kernel takes a word's
    nibbles k and k + 4 as one pair of bf16 values (bits 4k.. and 16 + 4k..) and multiplies the
    pair by two inputs with one instruction, so the inputs must sit side by side in x; and for
    fixed k the pairs of a run of words must be consecutive, so x is one contiguous load. In
    GPTQ order the inputs of nibble k are every 8th column. Marlin and other int4 kernels repack
    GPTQ weights at load time for the same reasons. `inverse` undoes it.
    """
    c = group_size // NIBBLES_PER_INT32  # words per group
    out_f, in_f = codes.shape
    if inverse:  # position (group, w, k // 4, k % 4) -> column (group, k % 4, w, k // 4)
        by_position = codes.reshape(out_f, -1, c, 2, 4)
        return by_position.permute(0, 1, 4, 2, 3).reshape(out_f, in_f)
    by_column = codes.reshape(out_f, -1, 4, c, 2)  # column = group * G + 2 * (k * c + w) + h
    return by_column.permute(0, 1, 3, 4, 2).reshape(out_f, in_f)  # position 8w + 4h + k


def interleave_int4(q: Int4Weight) -> Int4Weight:
    """The same weight packed in the kernel's interleaved order (a no-op if it already is)."""
    if q.interleaved:
        return q
    packed = pack_int4(interleave_columns(unpack_int4(q.packed), q.group_size))
    return Int4Weight(packed, q.scales, q.zeros, q.shape, q.group_size, interleaved=True)


def int4_codes(q: Int4Weight) -> torch.Tensor:
    """[out, in] uint8 codes in column order, whichever order `q` is packed in."""
    codes = unpack_int4(q.packed)
    return interleave_columns(codes, q.group_size, inverse=True) if q.interleaved else codes


def quantize_int4(
    w: torch.Tensor, group_size: int = 128, symmetric: bool = True, interleaved: bool = False
) -> Int4Weight:
    """Round each group of `group_size` consecutive inputs of each row to 16 levels; pack in GPTQ
    order, or with `interleaved` in the Triton kernel's (`interleave_columns`)."""
    _check_matrix(w, "quantize_int4")
    out_f, in_f = w.shape
    if group_size <= 0 or group_size % NIBBLES_PER_INT32:
        raise ValueError(f"group_size must be a positive multiple of 8, got {group_size}")
    if in_f % group_size:
        raise ValueError(
            f"in_features ({in_f}) is not divisible by group_size ({group_size}); pick a group "
            f"size that divides it (e.g. 32 or 64), or pad the weight's columns with zeros"
        )
    g = w.detach().float().reshape(out_f, in_f // group_size, group_size)
    if symmetric:
        # 7 not 8: the code range is -8..7, and a scale of amax / 7 keeps +amax representable.
        scales = (g.abs().amax(-1) / 7).clamp(min=_TINY)  # [out, groups]
        q = torch.round(g / scales[..., None]).clamp(-8, 7) + 8
        zeros = None
    else:
        # The range always includes 0 (as GPTQ does), so the zero point is a code in 0..15.
        lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
        scales = ((hi - lo) / 15).clamp(min=_TINY)
        zeros = torch.round(-lo / scales).clamp(0, 15)
        q = (torch.round(g / scales[..., None]) + zeros[..., None]).clamp(0, 15)
        zeros = zeros.to(torch.uint8)
    codes = q.reshape(out_f, in_f).to(torch.uint8)
    packed = pack_int4(interleave_columns(codes, group_size) if interleaved else codes)
    return Int4Weight(packed, scales, zeros, (out_f, in_f), group_size, interleaved)


def dequantize_int4(q: Int4Weight) -> torch.Tensor:
    """(code - zero) * scale, group by group: [out, in] fp32."""
    out_f, in_f = q.shape
    codes = int4_codes(q).float().reshape(out_f, in_f // q.group_size, q.group_size)
    zeros = 8.0 if q.zeros is None else q.zeros.float()[..., None]
    return ((codes - zeros) * q.scales[..., None]).reshape(out_f, in_f)


# -- FP8 E4M3 ------------------------------------------------------------------------------------


@dataclass
class Fp8Weight:
    """data: [out, in] float8_e4m3fn; scales: [out] fp32, one per output channel."""

    data: torch.Tensor
    scales: torch.Tensor


def to_fp8(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """x / scale in E4M3, saturating at +-448 (a plain cast would turn overflow into NaN)."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def quantize_fp8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per row (token): (E4M3 codes [rows, cols], scales [rows] fp32), each row's
    largest magnitude landing on 448 (the activations' twin of quantize_int8_rows)."""
    scales = _scales(x.detach().float().abs().amax(-1), FP8_MAX)
    return to_fp8(x.detach(), scales[..., None]), scales


def quantize_fp8(w: torch.Tensor) -> Fp8Weight:
    """Per output channel: each row's largest magnitude lands on 448."""
    _check_matrix(w, "quantize_fp8")
    scales = _scales(w.detach().float().abs().amax(1), FP8_MAX)  # [out]
    return Fp8Weight(to_fp8(w.detach(), scales[:, None]), scales)


def dequantize_fp8(q: Fp8Weight) -> torch.Tensor:
    return q.data.float() * q.scales[:, None]


def fake_quant_fp8(x: torch.Tensor, static_scale: torch.Tensor | float | None = None):
    """Round activations [tokens, features] through E4M3 and back (fp32 out).

    Without `static_scale`: dynamic, one scale per token (row), computed on the fly. With it: one
    calibrated scale for the whole tensor; values past 448 * scale saturate.
    """
    x = x.float()
    if static_scale is None:
        scale = _scales(x.abs().amax(-1, keepdim=True), FP8_MAX)  # [tokens, 1]
    else:
        scale = static_scale
    return to_fp8(x, scale).float() * scale


# -- INT8 W8A8 (+ SmoothQuant) -------------------------------------------------------------------


@dataclass
class Int8Weight:
    """data: [out, in] int8 in -127..127; scales: [out] fp32, one per output channel."""

    data: torch.Tensor
    scales: torch.Tensor


def quantize_int8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (codes [rows, cols] int8, scales [rows] fp32)."""
    x = x.detach().float()
    scales = _scales(x.abs().amax(-1), INT8_MAX)
    codes = torch.round(x / scales[..., None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return codes, scales


def quantize_int8(w: torch.Tensor, smooth: torch.Tensor | None = None) -> Int8Weight:
    """Per output channel; with `smooth` [in], quantize W * s (the layer divides x by s)."""
    _check_matrix(w, "quantize_int8")
    w = w.detach().float()
    if smooth is not None:
        if smooth.shape != (w.shape[1],):
            raise ValueError(
                f"smooth has shape {tuple(smooth.shape)}, expected ({w.shape[1]},): one factor "
                "per input channel of the weight"
            )
        w = w * smooth[None, :]
    return Int8Weight(*quantize_int8_rows(w))


def dequantize_int8(q: Int8Weight) -> torch.Tensor:
    return q.data.float() * q.scales[:, None]


def smoothquant_factors(
    act_amax: torch.Tensor, w: torch.Tensor, alpha: float = 0.5
) -> torch.Tensor:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) per input channel j (SmoothQuant, eq. 4).

    Dividing X's column j by s_j and multiplying W's column j by it leaves X @ W^T unchanged but
    moves the outlier channels' range from the activations (hard to quantize per token) into the
    weights (quantized per channel, where there is room). alpha = 0.5 splits it evenly.
    """
    _check_matrix(w, "smoothquant_factors")
    if act_amax.shape != (w.shape[1],):
        raise ValueError(
            f"act_amax has shape {tuple(act_amax.shape)}, expected ({w.shape[1]},): the largest "
            "|x| seen per input channel during calibration"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    w_amax = w.detach().float().abs().amax(0).clamp(min=1e-5)  # [in]
    s = act_amax.float().clamp(min=1e-5) ** alpha / w_amax ** (1 - alpha)
    return s.clamp(min=1e-5)
