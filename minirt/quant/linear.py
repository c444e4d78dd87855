"""QuantLinear: a decoder projection whose weights live in a low-precision format (formats.py).

`quantize_model` swaps every Linear/PackedLinear inside the decoder layers (never the embedding
or the LM head) for a QuantLinear; its forward is the reference: dequantize the weight, round the
activations through their format where the method quantizes them, matmul in fp32, cast back.
Packed layouts keep working because the output rows stay in the same order (`parts` is kept).
A method may bring INT4 functions of its own (`int4_method`: lab 4's quantizer, packer and GEMV):
its QuantLinears then quantize, pack and multiply with those, in every layer of the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from minirt.kernels import gemv
from minirt.kernels import w4a16_gemm as W4
from minirt.quant import formats as F


@dataclass(frozen=True)
class QuantMethod:
    """What a method name means: how weights are stored and whether activations are rounded."""

    name: str
    weights: str  # "int4" | "fp8" | "int8"
    group_size: int = 0  # int4 only
    symmetric: bool = True  # int4 only: False adds a zero point per group
    activations: str = "none"  # "none" | "fp8-dynamic" | "fp8-static" | "int8-dynamic"
    smooth_alpha: float | None = None  # int8 only: SmoothQuant migration strength
    functions: Int4Functions | None = None  # int4 only: yours instead of minirt's (int4_method)

    @property
    def needs_calibration(self) -> bool:
        return self.activations == "fp8-static" or self.smooth_alpha is not None


@dataclass(frozen=True)
class Int4Functions:
    """INT4 written outside minirt, on minirt.quant.formats' conventions (codes in 0..15, GPTQ's
    nibble order, zero point 8 when symmetric): a QuantLinear of a method that has them quantizes,
    packs and multiplies with these instead of minirt's formats and kernel.

    quantize(w [out, in] fp32, group_size) -> (codes [out, in], scales [out, groups]), plus zeros
      [out, groups] when asymmetric; pack(codes) -> [out, in // 8] int32;
    gemv(x [in], packed, scales, zeros or None, group_size) -> y [out], one token's product.
    """

    quantize: Callable
    pack: Callable
    gemv: Callable


def int4_method(
    quantize: Callable,
    pack: Callable,
    gemv: Callable,
    group_size: int = 128,
    symmetric: bool = True,
    name: str = "w4a16-yours",
) -> QuantMethod:
    """A W4A16 method made of your functions: `LLM(quantization=int4_method(...))` runs every
    decoder projection on them, your GEMV once per token (decode-shaped: a launch per row)."""
    functions = Int4Functions(quantize, pack, gemv)
    return QuantMethod(name, "int4", group_size, symmetric, functions=functions)


METHODS = {
    m.name: m
    for m in (
        QuantMethod("w4a16-g128", "int4", group_size=128),
        QuantMethod("w4a16-g32", "int4", group_size=32),
        QuantMethod("w4a16-g128-asym", "int4", group_size=128, symmetric=False),
        QuantMethod("fp8-dynamic", "fp8", activations="fp8-dynamic"),
        QuantMethod("fp8-static", "fp8", activations="fp8-static"),
        QuantMethod("int8", "int8", activations="int8-dynamic"),
        QuantMethod("int8-smooth", "int8", activations="int8-dynamic", smooth_alpha=0.5),
    )
}


def get_method(name: str | QuantMethod) -> QuantMethod:
    if isinstance(name, QuantMethod):  # a method of your own (int4_method)
        return name
    if name not in METHODS:
        raise ValueError(f"unknown quantization method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def check_engine_method(name: str | QuantMethod) -> None:
    """`LLM(quantization=name)` quantizes at load time: the method must exist and need no
    calibration data (that takes texts, which only `quantize_model` is given)."""
    if get_method(name).needs_calibration:  # raises on an unknown name, listing the methods
        raise ValueError(
            f"quantization={name!r} needs calibration data; build LLM() unquantized and call "
            "minirt.quant.quantize_model(llm, method, calibration=[texts]), or pick a method "
            "without it (w4a16-*, fp8-dynamic, int8)"
        )


# Up to this many tokens the W8A8 layers quantize their activations inside the GEMM (one launch
# instead of ~9 ops and the GEMM); past it, the kernel's redone quantization (once per column
# tile) costs more than the launches saved (H200: fp8-dynamic fused at batch 64 ran at 0.24x
# bf16 against 0.43x unfused).
FUSED_QUANT_MAX_TOKENS = 16


class QuantLinear(nn.Module):
    """y = x @ W^T (+ b) with W stored quantized. Tensors are buffers: .to() and state_dict work.

    Buffers by format: int4 -> qweight [out, in//8] int32 packed in the kernel's interleaved
    order (minirt.quant.formats.interleave_columns), scales [out, in//g], zeros (asymmetric);
    fp8 / int8 -> qweight [out, in], scales [out]. Optional: input_scale [] (fp8-static),
    smooth [in] (int8-smooth; a real deployment folds 1/s into the previous RMSNorm instead).
    """

    def __init__(
        self,
        method: str | QuantMethod,
        in_features: int,
        out_features: int,
        tensors: dict,
        parts=None,
    ):
        super().__init__()
        self.method = get_method(method)
        self.in_features, self.out_features = in_features, out_features
        self.parts = parts  # a PackedLinear's {name: rows}, kept so .part() still answers
        for name, t in tensors.items():
            self.register_buffer(name, t)
        if "bias" not in tensors:
            self.bias = None

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, method: str | QuantMethod, act_amax: torch.Tensor | None = None
    ) -> QuantLinear:
        """Quantize `linear`; `act_amax` [in] (largest |x| per input channel) from calibration."""
        m = get_method(method)
        if m.needs_calibration and act_amax is None:
            raise ValueError(f"method {method!r} needs calibration data (activation ranges)")
        w, t = linear.weight.detach().contiguous(), {}  # (a CPU engine's may be column-major)
        if m.functions is not None:
            t = _int4_with(m, w)
        elif m.weights == "int4":
            q = F.quantize_int4(w, m.group_size, m.symmetric, interleaved=True)
            t = {"qweight": q.packed, "scales": q.scales}
            if q.zeros is not None:
                t["zeros"] = q.zeros
        elif m.weights == "fp8":
            q = F.quantize_fp8(w)
            t = {"qweight": q.data, "scales": q.scales}
        else:
            smooth = None
            if m.smooth_alpha is not None:
                smooth = F.smoothquant_factors(act_amax.to(w.device), w, m.smooth_alpha)
                t["smooth"] = smooth
            q = F.quantize_int8(w, smooth)
            t |= {"qweight": q.data, "scales": q.scales}
        if m.activations == "fp8-static":
            t["input_scale"] = (act_amax.float().amax() / F.FP8_MAX).clamp(min=1e-12).to(w.device)
        if linear.bias is not None:
            t["bias"] = linear.bias.detach().clone()
        parts = dict(linear.parts) if hasattr(linear, "parts") else None
        return cls(method, linear.in_features, linear.out_features, t, parts)

    def part(self, name: str) -> slice:  # same rows as PackedLinear.part
        names = list(self.parts)
        start = sum(self.parts[n] for n in names[: names.index(name)])
        return slice(start, start + self.parts[name])

    def int4_weight(self) -> F.Int4Weight:
        """The int4 buffers as the format they are (interleaved: what minirt's kernel reads;
        a method's own functions pack in GPTQ's order)."""
        shape, g = (self.out_features, self.in_features), self.method.group_size
        zeros = getattr(self, "zeros", None)
        mine = self.method.functions is None
        return F.Int4Weight(self.qweight, self.scales, zeros, shape, g, interleaved=mine)

    def gemv_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(codes, scales) when the decode GEMV takes this layer at x's rows
        (`minirt.kernels.gemv.scaled_linear`, one or two rows): the activations quantized per
        token on the fly without smoothing (fp8-dynamic, int8), so the GEMV can make x's codes
        itself, after the norm or SiLU·mul it computes too."""
        m = self.method
        if m.activations not in ("fp8-dynamic", "int8-dynamic") or m.smooth_alpha is not None:
            return None
        return (self.qweight, self.scales) if gemv.use_scaled_gemv(x, self.qweight) else None

    def with_prologue(self, x: torch.Tensor, norm=None, residual=None, silu_mul=False):
        """(y, the residual stream) of this layer on x after the norm (with the residual add)
        or SiLU·mul, in one kernel, where this layer's kernel takes that prologue at x's rows:
        the 8-bit decode GEMV (`gemv_codes`). None elsewhere: then the prologue runs on its own
        and the layer is called (minirt.model.layers.norm_linear). The int4 kernels take none:
        inside the tensor-core GEMM every program re-reading and normalising its rows made
        decode slower, 0.45-0.69x of the separate kernels at 8-32 rows on an H100
        (`docs/measurements/w4pdl-h100-20261207.json`)."""
        codes = self.gemv_codes(x)
        if codes is None:
            return None
        return gemv.scaled_linear(x, *codes, self.bias, norm=norm, residual=residual,
                                  silu_mul=silu_mul)  # fmt: skip

    def dequantized_weight(self) -> torch.Tensor:
        """[out, in] fp32: what the quantized weight stands for (smoothing included)."""
        m = self.method
        if m.weights == "int4":
            return F.dequantize_int4(self.int4_weight())
        if m.weights == "fp8":
            return F.dequantize_fp8(F.Fp8Weight(self.qweight, self.scales))
        return F.dequantize_int8(F.Int8Weight(self.qweight, self.scales))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, m = x.shape[:-1], self.method
        if m.functions is not None:  # a method's own GEMV, once per token: a launch per row
            zeros, g = getattr(self, "zeros", None), m.group_size
            rows = x.reshape(-1, self.in_features)  # [tokens, in]
            y = [m.functions.gemv(r, self.qweight, self.scales, zeros, g) for r in rows]
            y = torch.stack(y).float().reshape(-1, self.out_features)  # [tokens, out]
            y = y + self.bias.float() if self.bias is not None else y
            return y.to(x.dtype).reshape(*lead, self.out_features)
        if x.is_cuda:  # the Triton kernels; the lines below are their reference (and CPU) path
            y = self._kernel_forward(x.reshape(-1, self.in_features))
            return y.reshape(*lead, self.out_features)
        x32 = x.reshape(-1, self.in_features).float()  # [tokens, in]
        if m.activations == "int8-dynamic":
            if m.smooth_alpha is not None:
                x32 = x32 / self.smooth
            # The W8A8 GEMM: integer codes times integer codes, both scales factor out.
            xq, xs = F.quantize_int8_rows(x32)
            y = (xq.float() @ self.qweight.float().T) * xs[:, None] * self.scales[None, :]
        else:
            if m.activations == "fp8-dynamic":
                x32 = F.fake_quant_fp8(x32)
            elif m.activations == "fp8-static":
                x32 = F.fake_quant_fp8(x32, self.input_scale)
            y = x32 @ self.dequantized_weight().T  # [tokens, out]
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def _kernel_forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [tokens, in] in the model's dtype -> [tokens, out]: the decode GEMV at one or two
        rows where `gemv_codes` says so, else dequantise-in-kernel for int4, the 8-bit scaled GEMM
        for fp8 / int8 with the activations quantized first."""
        from minirt.kernels.scaled_gemm import quantize_rows, scaled_gemm, scaled_gemm_dynamic

        m, codes = self.method, self.gemv_codes(x)
        if codes is not None:  # one or two rows: the decode GEMV, x's codes made inside
            y = gemv.scaled_linear(x, *codes)[0]
        elif m.weights == "int4":
            y = W4.w4a16_gemm(x, self.int4_weight())
        elif m.activations == "fp8-static":
            xs = self.input_scale.reshape(1)
            xq = F.to_fp8(x.float(), xs)
            y = scaled_gemm(xq, xs, self.qweight, self.scales, out_dtype=x.dtype)
        else:  # one scale per token
            xin = x.float() / self.smooth if m.smooth_alpha is not None else x
            if x.shape[0] <= FUSED_QUANT_MAX_TOKENS:  # found and applied inside the GEMM
                y = scaled_gemm_dynamic(xin, self.qweight, self.scales, out_dtype=x.dtype)
            else:  # quantized first, once (one launch): the fused kernel redoes it per tile
                xq, xs = quantize_rows(xin, self.qweight.dtype)
                y = scaled_gemm(xq, xs, self.qweight, self.scales, out_dtype=x.dtype)
        return y + self.bias.to(y.dtype) if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, method={self.method.name!r}"

    def to_dict(self) -> dict:
        return {**asdict(self.method), "in_features": self.in_features,
                "out_features": self.out_features, "parts": self.parts}  # fmt: skip


def _int4_with(m: QuantMethod, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """A method's own functions on one weight: the buffers of its QuantLinear."""
    codes, scales, *zeros = m.functions.quantize(w.float().clone(), m.group_size)
    if len(zeros) != (0 if m.symmetric else 1):
        want = "(codes, scales)" if m.symmetric else "(codes, scales, zeros)"
        raise ValueError(f"method {m.name!r}: quantize returned {2 + len(zeros)} values; {want}")
    t = {"qweight": m.functions.pack(codes), "scales": scales}
    return t | ({"zeros": zeros[0]} if zeros else {})


# -- whole models ---------------------------------------------------------------------------------


def _causal_lm(llm_or_model) -> nn.Module:
    return llm_or_model if isinstance(llm_or_model, nn.Module) else llm_or_model.model


def target_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The decoder layers' projections: qkv/o, gate_up/down. Not embed_tokens, not lm_head."""
    return {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and ".layers." in f".{name}"
    }


@torch.no_grad()
def collect_act_amax(
    model: nn.Module, linears: dict[str, nn.Linear], run: Callable[[], object]
) -> dict[str, torch.Tensor]:
    """Largest |x| per input channel of each linear over whatever forward passes `run` makes."""
    amax: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(module, args):
            x = args[0].detach().float().reshape(-1, module.in_features).abs().amax(0)
            amax[name] = x if name not in amax else torch.maximum(amax[name], x)

        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in linears.items()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    missing = sorted(set(linears) - set(amax))
    if missing:
        raise ValueError(f"calibration never ran through {missing[:3]}; is it empty?")
    return amax


def quantize_model(
    llm_or_model, method: str, calibration: Iterable[str | list[int]] | Callable | None = None
) -> nn.Module:
    """Replace the decoder's projections with QuantLinear(`method`) in place; return the model.

    calibration: prompts (texts or token lists) that `llm.score` runs when given an LLM, or a
    callable that runs forward passes itself; needed by "fp8-static" and "int8-smooth".
    """
    m = get_method(method)
    model = _causal_lm(llm_or_model)
    linears = target_linears(model)
    if not linears:
        raise ValueError("found no decoder Linear layers to quantize; already quantized?")
    amax: dict[str, torch.Tensor] = {}
    if m.needs_calibration:
        if calibration is None:
            raise ValueError(
                f"method {method!r} needs calibration: pass calibration=[some texts] with an LLM "
                "(a few hundred tokens of typical input is enough)"
            )
        if callable(calibration):
            run = calibration
        elif isinstance(llm_or_model, nn.Module):
            raise ValueError("calibration prompts need an LLM (to score them); pass a callable")
        else:
            prompts = list(calibration)
            run = lambda: [llm_or_model.score(p) for p in prompts]  # noqa: E731
        amax = collect_act_amax(model, linears, run)
    for name, linear in linears.items():
        parent_name, _, child = name.rpartition(".")
        q = QuantLinear.from_linear(linear, method, amax.get(name))
        setattr(model.get_submodule(parent_name), child, q)
    if not isinstance(llm_or_model, nn.Module):  # an LLM's CUDA graphs still hold the old layers
        llm_or_model.capture_graphs()
    return model


# -- checkpoints: safetensors, never pickle -------------------------------------------------

QUANT_FILE = "model.quant.safetensors"
QUANT_VERSION = "2"  # 1: int4 qweight in GPTQ order (load_quantized repacks it); 2: interleaved


def save_quantized(llm_or_model, folder) -> Path:
    """Write every tensor of the model to folder/model.quant.safetensors; the metadata's
    "quantization" entry is a JSON {layer name: method and shapes} that load_quantized reads."""
    model = _causal_lm(llm_or_model)
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not quantized:
        raise ValueError("the model has no QuantLinear layers; call quantize_model first")
    own = next((m.method.name for m in quantized.values() if m.method.functions), None)
    if own is not None:  # a checkpoint names its method; functions cannot be written down
        raise ValueError(
            f"the model is quantized with {own!r}, a method of your own functions; only "
            f"minirt's methods ({', '.join(sorted(METHODS))}) can be saved and loaded again"
        )
    layers = {n: m.to_dict() for n, m in quantized.items()}
    tensors, seen = {}, set()
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:  # tied lm_head: the embedding already holds it
            continue
        seen.add(t.data_ptr())
        tensors[name] = t.detach().contiguous().cpu()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": "minirt-quant", "version": QUANT_VERSION, "quantization": json.dumps(layers)}
    save_file(tensors, str(folder / QUANT_FILE), metadata=meta)
    return folder / QUANT_FILE


@torch.no_grad()
def load_quantized(llm_or_model, folder) -> nn.Module:
    """Fill a full-precision model of the same config (e.g. `LLM(...).model`) from a folder that
    save_quantized wrote: its decoder projections become the saved QuantLinears, bit for bit."""
    model = _causal_lm(llm_or_model)
    path = Path(folder) / QUANT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; write it with save_quantized(model, folder)")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "minirt-quant":
            raise ValueError(f"{path} was not written by save_quantized (no minirt-quant metadata)")
        saved = {k: f.get_tensor(k) for k in f.keys()}
    device = next(model.parameters()).device
    for name, info in json.loads(meta["quantization"]).items():
        prefix = name + "."
        own = {k[len(prefix) :]: v.to(device) for k, v in saved.items() if k.startswith(prefix)}
        if meta.get("version") == "1" and info["weights"] == "int4":
            shape = (info["out_features"], info["in_features"])
            gptq = F.Int4Weight(own["qweight"], own["scales"], None, shape, info["group_size"])
            saved[prefix + "qweight"] = F.interleave_int4(gptq).packed.cpu()
            own["qweight"] = saved[prefix + "qweight"].to(device)
        parent_name, _, child = name.rpartition(".")
        q = QuantLinear(info["name"], info["in_features"], info["out_features"], own, info["parts"])
        setattr(model.get_submodule(parent_name), child, q)
    state = model.state_dict()
    unknown = sorted(set(saved) - set(state))
    if unknown:
        raise ValueError(f"{path} holds tensors this model lacks: {unknown[:3]}; same config?")
    loaded_ptrs = set()
    for name, t in saved.items():
        dest = state[name]
        if dest.shape != t.shape:
            raise ValueError(f"{name}: saved shape {tuple(t.shape)} != model {tuple(dest.shape)}")
        dest.copy_(t)
        loaded_ptrs.add(dest.data_ptr())
    missing = [n for n, t in state.items() if t.data_ptr() not in loaded_ptrs]
    if missing:
        raise ValueError(f"{path} lacks tensors: {missing[:3]}")
    return model
