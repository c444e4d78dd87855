"""Lab 8, tasks 4a-4e: the FlashAttention ladder in Triton, each rung in Triton's interpreter.

Every rung is a `@triton.jit` kernel the learner writes and a launcher the notebook gives: a
row's load and store with a masked tail, a row softmax, the online softmax over tiles, tiled
causal attention (the backend's prefill attention) and paged decode attention split along the
context. The worker plays the launcher on a case's tensors with the kernels' launches counted
(`CountingKernel`) and records the outputs and the counts; the parent builds the same tensors,
runs minirt's PyTorch spec and compares (a kernel never launched: a PyTorch fallback, refused
with a message that says so).
"""

from __future__ import annotations

import random
import re
from types import SimpleNamespace

import torch

from minirt.grading.core import CountingKernel, Mismatch
from minirt.grading.lab08_pools import (
    DTYPES,
    TOLERANCE,
    close,
    decode_args,
    describe_pool,
    draw_pool,
    pool_size,
    prefill_args,
)

SENTINEL = 7.0  # what the padding after each output row holds; a masked store leaves it there
PAD = 8  # columns of padding after each row: a tile of 8 past the end stays inside the buffer


def launched(learner: SimpleNamespace, launcher: str, kernels: tuple[str, ...], call):
    """`call()` with the notebook's kernels counted: (its result, {kernel: launches})."""
    from triton.runtime.jit import KernelInterface  # only these tasks need triton

    where = getattr(learner, launcher).__globals__  # the notebook's namespace
    counting = {}
    for name in kernels:
        kernel = getattr(learner, name)
        if not isinstance(kernel, KernelInterface):
            raise Mismatch(
                f"{name} is {type(kernel).__name__}; it must be a @triton.jit kernel "
                f"({launcher} launches it)"
            )
        counting[name] = CountingKernel(kernel)
    try:
        where.update(counting)
        result = call()
    except Exception as e:  # the interpreter wraps what the kernel raised: a stub says so
        cause = e.__cause__ or e.__context__
        if not isinstance(e, Mismatch) and isinstance(cause, NotImplementedError):
            raise cause from None
        raise
    finally:
        where.update({name: c.kernel for name, c in counting.items()})
    return result, {name: c.launches for name, c in counting.items()}


def check_launches(launches: dict, call: str, size: int) -> None:
    for name, n in launches.items():
        if n == 0:
            raise Mismatch(
                f"{call}: {name} was never launched; the task grades your Triton kernel, not a "
                "PyTorch fallback",
                size,
            )


# -- 4a, 4b, 4c: rows ---------------------------------------------------------------------------
def draw_rows(rng: random.Random, i: int, longest: int, first: tuple[int, ...]) -> dict:
    """Case `i`: a few rows of `cols` values (the first cases' lengths fixed by `first`), their
    spread and trend, a dtype and a seed."""
    cols = first[i] if i < len(first) else rng.randint(1, longest)
    return {
        "rows": rng.randint(1, 4),
        "cols": cols,
        "spread": rng.choice((1.0, 5.0, 30.0)),
        "trend": rng.choice((0.0, 0.0, 1.0, -1.0)),  # maxima that grow (or shrink) along a row
        "alpha": round(rng.uniform(-3, 3), 3),
        "dtype": ("float32", "float16")[i % 3 == 2],
        "seed": rng.randrange(2**31),
    }


def rows_tensors(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, out): views of [rows, cols] into buffers [rows, cols + PAD]; x's padding is NaN and
    out's holds SENTINEL, so a load or a store past a row's end shows."""
    g = torch.Generator().manual_seed(case["seed"])
    rows, cols, dtype = case["rows"], case["cols"], DTYPES[case["dtype"]]
    values = torch.randn(rows, cols, generator=g) * case["spread"]
    values += case["trend"] * case["spread"] * torch.linspace(0, 1, cols)
    x_buf = torch.full((rows, cols + PAD), float("nan"))
    x_buf[:, :cols] = values
    out_buf = torch.full((rows, cols + PAD), SENTINEL)
    return x_buf.to(dtype)[:, :cols], out_buf.to(dtype)


def describe_rows(case: dict) -> str:
    what = f"{case['rows']} rows of {case['cols']} {case['dtype']} values"
    if case["trend"]:
        what += f" ({'rising' if case['trend'] > 0 else 'falling'} along the row)"
    return what + f", spread {case['spread']:g}"


def compare_rows(got: dict, want: torch.Tensor, case: dict, call: str) -> None:
    size = case["rows"] * case["cols"]
    check_launches(got["launches"], call, size)
    out, cols = got["out"], case["cols"]
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(want.shape):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise Mismatch(f"{call}: the output is {shape}; expected {tuple(want.shape)}", size)
    changed = (out[:, cols:] != want[:, cols:]).nonzero()
    if len(changed):
        r, c = (int(x) for x in changed[0])
        raise Mismatch(
            f"{call}: your kernel wrote past the end of row {r}, at column {cols + c} (a row has "
            f"{cols}): the last tile sticks out of the row; mask its loads and stores",
            size,
        )
    out, want = out[:, :cols].float(), want[:, :cols].float()
    rtol, atol = TOLERANCE[DTYPES[case["dtype"]]]
    bad = ~torch.isclose(out, want, rtol=rtol, atol=atol)
    if bad.any():
        r, c = (int(x) for x in bad.nonzero()[0])
        raise Mismatch(
            f"{call}: row {r}, column {c} is {out[r, c].item():.6g}, expected "
            f"{want[r, c].item():.6g} (allowed {atol} + {rtol} x |expected|; row {r} starts "
            f"{want[r, :4].tolist()}…, yours {out[r, :4].tolist()}…)",
            size,
        )


def play_scale(learner: SimpleNamespace, case: dict) -> dict:
    x, out_buf = rows_tensors(case)
    out = out_buf[:, : case["cols"]]
    run = lambda: learner.scale_rows(x, case["alpha"], out)  # noqa: E731
    _, launches = launched(learner, "scale_rows", ("scale_rows_kernel",), run)
    return {"out": out_buf, "launches": launches}


def expect_scale(case: dict) -> torch.Tensor:
    x, out_buf = rows_tensors(case)
    out_buf[:, : case["cols"]] = (x.float() * case["alpha"]).to(x.dtype)
    return out_buf


def compare_scale(got: dict, want: torch.Tensor, case: dict) -> None:
    call = f"scale_rows(x, alpha={case['alpha']}, out) on {describe_rows(case)}"
    compare_rows(got, want, case, call)


def _play_softmax(learner, case: dict, launcher: str, kernel: str) -> dict:
    x, out_buf = rows_tensors(case)
    run = lambda: getattr(learner, launcher)(x)  # noqa: E731
    out, launches = launched(learner, launcher, (kernel,), run)
    if isinstance(out, torch.Tensor) and tuple(out.shape) == tuple(x.shape):
        out_buf[:, : case["cols"]] = out.to(out_buf.dtype)
        out = out_buf
    return {"out": out, "launches": launches}


def play_softmax(learner: SimpleNamespace, case: dict) -> dict:
    return _play_softmax(learner, case, "softmax_rows", "softmax_kernel")


def play_online(learner: SimpleNamespace, case: dict) -> dict:
    return _play_softmax(learner, case, "softmax_tiled", "online_softmax_kernel")


def expect_softmax(case: dict) -> torch.Tensor:
    x, out_buf = rows_tensors(case)
    out_buf[:, : case["cols"]] = x.float().softmax(-1).to(x.dtype)
    return out_buf


def compare_softmax(got: dict, want: torch.Tensor, case: dict) -> None:
    compare_rows(got, want, case, f"softmax_rows(x) on {describe_rows(case)}")


def compare_online(got: dict, want: torch.Tensor, case: dict) -> None:
    tiles = -(-case["cols"] // 8)
    call = f"softmax_tiled(x) on {describe_rows(case)}, {tiles} tiles of 8"
    compare_rows(got, want, case, call)


def draw_scale(rng: random.Random, i: int) -> dict:
    return draw_rows(rng, i, longest=30, first=(8, 1, 13))  # whole tiles, then a tail


def draw_softmax(rng: random.Random, i: int) -> dict:
    case = draw_rows(rng, i, longest=40, first=(1, 16, 5))
    case["spread"] = case["spread"] * 4  # scores of a few hundred: exp alone overflows
    return case


def draw_online(rng: random.Random, i: int) -> dict:
    case = draw_rows(rng, i, longest=60, first=(8, 9, 37))  # one tile, then several
    if i > 0:
        case["cols"] = max(case["cols"], 9)
        case["trend"] = case["trend"] or 1.0  # a maximum that moves from tile to tile
    return case


# -- 4d: tiled causal attention (prefill) -------------------------------------------------------
PREFILL = ("prefill_kernel",)


def draw_prefill(rng: random.Random, i: int) -> dict:
    return draw_pool(rng, i, small=True, prefill=True)


def _play_launcher(learner: SimpleNamespace, launcher: str, kernels, args: tuple) -> dict:
    """The learner's launcher on `args`: its output and how often each of `kernels` ran."""
    run = lambda: getattr(learner, launcher)(*args)  # noqa: E731
    out, launches = launched(learner, launcher, kernels, run)
    return {"out": out, "launches": launches}


def play_prefill(learner: SimpleNamespace, case: dict) -> dict:
    return _play_launcher(learner, "prefill_triton", PREFILL, prefill_args(case))


def expect_prefill(case: dict) -> torch.Tensor:
    from minirt.kernels.prefill_attention import prefill_attention_ref

    return prefill_attention_ref(*prefill_args(case))


def compare_prefill(got: dict, want: torch.Tensor, case: dict) -> None:
    call = f"prefill_triton(...) on {describe_pool(case)}"
    check_launches(got["launches"], call, pool_size(case))
    try:
        close(got["out"], want, call, pool_size(case), rows="token")
    except Mismatch as e:
        token = re.search(r"token (\d+), head", str(e))
        if token is None:
            raise
        raise Mismatch(f"{e} ({_position(case, int(token.group(1)))})", e.size) from None


def _position(case: dict, token: int) -> str:
    """'token 5 is query 2 of sequence 1, at position 9 of its context of 12'."""
    start = 0
    for s, (q_len, ctx) in enumerate(zip(case["q_lens"], case["lens"], strict=True)):
        if token < start + q_len:
            r = token - start
            return (
                f"token {token} is query {r} of sequence {s}, at position {ctx - q_len + r} of "
                f"its context of {ctx}: it sees keys 0 … {ctx - q_len + r}"
            )
        start += q_len
    return f"token {token}"


# -- 4e: paged decode attention, split along the context ----------------------------------------
DECODE = ("decode_split_kernel", "decode_combine_kernel")
PARTITION = 8  # tokens per split, as the notebook's launcher cuts a context


def draw_decode(rng: random.Random, i: int) -> dict:
    return draw_pool(rng, i, small=True)


def play_decode(learner: SimpleNamespace, case: dict) -> dict:
    return _play_launcher(learner, "paged_decode_triton", DECODE, decode_args(case))


def expect_decode(case: dict) -> torch.Tensor:
    from minirt.kernels.decode_attention import decode_attention_ref

    return decode_attention_ref(*decode_args(case))


def compare_decode(got: dict, want: torch.Tensor, case: dict) -> None:
    splits = [-(-c // PARTITION) for c in case["lens"]]
    call = (
        f"paged_decode_triton(...) on {describe_pool(case)}; in the launcher's partitions of "
        f"{PARTITION} tokens the contexts span {splits} splits"
    )
    check_launches(got["launches"], call, pool_size(case))
    close(got["out"], want, call, pool_size(case))


# Each rung's (draw, play, expect, compare), for its Task (minirt.grading.lab08).
SCALE = (draw_scale, play_scale, expect_scale, compare_scale)
SOFTMAX = (draw_softmax, play_softmax, expect_softmax, compare_softmax)
ONLINE = (draw_online, play_online, expect_softmax, compare_online)
PREFILL_TASK = (draw_prefill, play_prefill, expect_prefill, compare_prefill)
DECODE_TASK = (draw_decode, play_decode, expect_decode, compare_decode)
