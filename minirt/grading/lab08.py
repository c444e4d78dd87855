"""Lab 8 (labs/lab08_paged_attention.ipynb): the paged KV pool from the kernel's side — write a
step's K/V into its slots, attend one query per sequence through the block table — plugged into
the engine as `LLM(kernel_backend=...)`, then the same attention as a Triton kernel.

Task 1 compares `write_kv` with `store_kv_ref` on random pools (whole pools, NaN for slots never
written, -1 slots that store nothing). Task 2 compares `paged_decode` with `decode_attention_ref`
on random shapes: GQA groups, scattered block tables with padding entries, empty padding rows,
NaN in every slot past a context. Task 3 runs the engine on fresh prompts with both as its
kernels: every call it makes is checked against the reference on the very same pool, then the
greedy tokens against the engine on minirt's kernels (a token may differ only where the reference
model itself is tied within rounding). Task 4 runs `paged_decode_triton` (the notebook's launcher
of the learner's `@triton.jit` kernel) in Triton's interpreter on tiny shapes, counts its
launches, and ends with a short engine run on it.
"""

from __future__ import annotations

import random
from dataclasses import replace
from types import SimpleNamespace

import torch

from minirt.grading.core import CountingKernel, Mismatch, Task
from minirt.grading.guard import Forbidden
from minirt.kernels.backend import TORCH
from minirt.kernels.decode_attention import decode_attention_ref
from minirt.kernels.store_kv import store_kv_ref

FORBIDDEN = Forbidden(
    modules=("minirt.kernels",),
    names=(
        "store_kv",
        "store_kv_ref",
        "decode_attention",
        "decode_attention_ref",
        "paged_attention_ref",
        "prefill_attention",
        "prefill_attention_ref",
        "paged_kv_offsets",
        "TORCH",
        "TRITON",
        "BACKENDS",
        "get_backend",
        "scaled_dot_product_attention",  # torch's own attention: the learner writes the softmax
    ),
    what="minirt's attention kernels (and torch's)",
)

RTOL, ATOL = 1e-4, 1e-5  # float32 sums in another order differ by ~1e-7


# -- random pools -------------------------------------------------------------------------------
def _pool(rng: random.Random, i: int, small: bool = False):
    """A pool with some sequences in it: (q, k_cache, v_cache, block_tables, context_lens,
    max_context_len, note). Slots no context covers hold NaN, as torch.empty may."""
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    kv_heads = rng.choice((1, 2)) if small else rng.choice((1, 2, 4))
    group = rng.choice((1, 2)) if small else rng.choice((1, 2, 4))
    head_dim = rng.choice((4, 8)) if small else rng.choice((4, 8, 16, 64))
    bs = rng.choice((1, 2, 4)) if small else rng.choice((1, 2, 4, 8, 16))
    n = rng.randint(1, 3) if small else rng.randint(1, 5)
    longest = 20 if small else 48  # small: still several of a Triton kernel's tiles
    lens = [rng.randint(1, longest) for _ in range(n)]
    note = []
    if i == 0:
        lens, note = [1] * n, ["every context is one token"]
    elif i == 1 and n > 1:
        lens[0] = 0
        note.append("sequence 0 is a padding row (context 0)")
    elif i % 5 == 2:
        lens[rng.randrange(n)] = 0
        note.append("a padding row (context 0)")
    blocks = [-(-c // bs) for c in lens]
    width = max(1, max(blocks) + rng.randint(0, 2))  # tables padded past their blocks
    num_blocks = sum(blocks) + rng.randint(1, 6)
    ids = list(range(num_blocks))
    rng.shuffle(ids)  # scattered, as after a while of serving
    tables = torch.full((n, width), -1 if rng.random() < 0.5 else 0, dtype=torch.int32)
    at = 0
    for s, b in enumerate(blocks):
        tables[s, :b] = torch.tensor(ids[at : at + b], dtype=torch.int32)
        at += b
    shape = (num_blocks, bs, kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"))
    v_cache = torch.full(shape, float("nan"))
    for s, c in enumerate(lens):  # write the contexts (and only them)
        for t in range(c):
            b = int(tables[s, t // bs])
            k_cache[b, t % bs] = torch.randn(kv_heads, head_dim, generator=g)
            v_cache[b, t % bs] = torch.randn(kv_heads, head_dim, generator=g)
    q = torch.randn(n, kv_heads * group, head_dim, generator=g)
    context_lens = torch.tensor(lens, dtype=torch.int32)
    max_ctx = max(lens) + rng.choice((0, 0, 3, 100))  # an upper bound (a CUDA graph's is large)
    what = (
        f"{n} sequences with contexts {lens}, {kv_heads * group} query heads on {kv_heads} KV "
        f"heads, head_dim {head_dim}, blocks of {bs}, block_tables {tables.tolist()}, "
        f"max_context_len {max_ctx}"
    )
    if note:
        what += f" ({'; '.join(note)})"
    return q, k_cache, v_cache, tables, context_lens, max_ctx, what


def _close(got, want: torch.Tensor, call: str, size: int) -> None:
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{call} returned {type(got).__name__}; expected a tensor", size)
    if tuple(got.shape) != tuple(want.shape):
        raise Mismatch(
            f"{call} returned shape {tuple(got.shape)}; expected {tuple(want.shape)} "
            "([num_seqs, num_heads, head_dim], one output per query head)",
            size,
        )
    got = got.detach().float()
    if torch.isnan(got).any():
        s, h = (int(x) for x in torch.isnan(got).nonzero()[0][:2])
        raise Mismatch(
            f"{call}: the output of sequence {s}, head {h} is NaN. Slots past a context were "
            "never written (they hold NaN here, as torch.empty may): leave them out of the "
            "softmax, and out of the sum with V (0 * NaN is NaN)",
            size,
        )
    if not torch.allclose(got, want, rtol=RTOL, atol=ATOL):
        err = (got - want).abs()
        s, h = (int(x) for x in (err == err.max()).nonzero()[0][:2])
        raise Mismatch(
            f"{call}: sequence {s}, head {h} differs from minirt's reference by up to "
            f"{err.max().item():.3g} (allowed {ATOL} + {RTOL} x |reference|): got "
            f"{got[s, h, :4].tolist()}…, expected {want[s, h, :4].tolist()}…",
            size,
        )


# -- task 1: write_kv -----------------------------------------------------------------------------
def check_write(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    kv_heads, head_dim, bs = rng.choice((1, 2, 4)), rng.choice((4, 8, 64)), rng.choice((1, 4, 16))
    num_blocks = rng.randint(1, 8)
    n = rng.randint(1, min(12, num_blocks * bs))
    slots = rng.sample(range(num_blocks * bs), n)
    if i % 3 == 1:  # padding rows store nothing (a CUDA graph pads its batch with them)
        for j in rng.sample(range(n), rng.randint(1, n)):
            slots[j] = -1
    dtype = (torch.float32, torch.bfloat16)[i % 4 == 3]
    k = torch.randn(n, kv_heads, head_dim, generator=g)
    v = torch.randn(n, kv_heads, head_dim, generator=g)
    shape = (num_blocks, bs, kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    if i % 2:  # a pool with other sequences' KV already in it
        k_cache[:] = torch.randn(shape, generator=g).to(dtype)
        v_cache[:] = torch.randn(shape, generator=g).to(dtype)
    mapping = torch.tensor(slots, dtype=torch.int64)
    want_k, want_v = k_cache.clone(), v_cache.clone()
    store_kv_ref(k, v, want_k, want_v, mapping)
    call = (
        f"write_kv(k, v, k_cache, v_cache, slot_mapping={slots}) with {n} tokens, {kv_heads} KV "
        f"heads of {head_dim}, a pool of {num_blocks} blocks of {bs} ({str(dtype)[6:]})"
    )
    learner.write_kv(k.clone(), v.clone(), k_cache, v_cache, mapping.clone())
    for name, mine, want in (("k_cache", k_cache, want_k), ("v_cache", v_cache, want_v)):
        same = (mine == want) | (mine.isnan() & want.isnan())
        if not same.all():
            b, off, h = (int(x) for x in (~same).nonzero()[0][:3])
            slot = b * bs + off
            who = [j for j, s in enumerate(slots) if s == slot]
            why = (
                f"token {who[0]} goes to slot {slot} = block {b}, offset {off}"
                if who
                else "no token goes to that slot: leave it as it was"
            )
            raise Mismatch(
                f"{call}: {name}[{b}, {off}, {h}] is {mine[b, off, h, :3].tolist()}…, expected "
                f"{want[b, off, h, :3].tolist()}… ({why}; -1 stores nothing; write into the pool "
                "you were given, in place)",
                n,
            )


# -- task 2: paged_decode -------------------------------------------------------------------------
def check_decode(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    q, k_cache, v_cache, tables, lens, max_ctx, what = _pool(rng, i)
    head_dim = q.shape[-1]
    scale = head_dim**-0.5
    want = decode_attention_ref(q, k_cache, v_cache, tables, lens, scale, max_ctx)
    call = f"paged_decode(...) on {what}"
    got = learner.paged_decode(
        q.clone(), k_cache.clone(), v_cache.clone(), tables.clone(), lens.clone(), scale, max_ctx
    )
    _close(got, want, call, int(lens.sum()) + q.shape[0])


# -- task 3: the engine -------------------------------------------------------------------------
class _Spy:
    """The kernels the learner's engine runs: each call is the learner's, checked against the
    reference on the very same pool; the step and the layer name a difference."""

    def __init__(self, write, decode, num_layers: int):
        self.write, self.decode = write, decode
        self.num_layers = num_layers
        self.scheduler = None
        self.writes = self.decodes = 0

    def _where(self, calls: int) -> str:
        step = self.scheduler.num_steps - 1 if self.scheduler is not None else "?"
        return f"step {step}, layer {calls % self.num_layers}"

    def store_kv(self, k, v, k_cache, v_cache, slot_mapping) -> None:
        where = self._where(self.writes)
        self.writes += 1
        want_k, want_v = k_cache.clone(), v_cache.clone()
        store_kv_ref(k, v, want_k, want_v, slot_mapping)
        self.write(k, v, k_cache, v_cache, slot_mapping)
        for name, mine, want in (("k_cache", k_cache, want_k), ("v_cache", v_cache, want_v)):
            if not ((mine == want) | (mine.isnan() & want.isnan())).all():
                raise Mismatch(
                    f"{where}: after write_kv of {k.shape[0]} tokens at slots "
                    f"{slot_mapping.tolist()}, the {name} differs from what store_kv_ref writes"
                )

    def decode_attention(self, q, k_cache, v_cache, block_tables, context_lens, scale,
                         max_context_len, num_splits=None):  # fmt: skip
        where = self._where(self.decodes)
        self.decodes += 1
        want = decode_attention_ref(
            q, k_cache, v_cache, block_tables, context_lens, scale, max_context_len
        )
        got = self.decode(q, k_cache, v_cache, block_tables, context_lens, scale, max_context_len)
        call = (
            f"{where}: the decode of {q.shape[0]} sequences with contexts {context_lens.tolist()}"
        )
        _close(got, want, call, 0)
        return got


def _engine(backend=None, **kw):
    from minirt import LLM  # the engine, only for these tasks

    return LLM(device="cpu", kernel_backend=backend or "torch", **kw)


def _run_engine(write, decode, rng: random.Random, small: bool = False) -> None:
    """Generate with `write` and `decode` as the engine's store_kv and decode_attention (each
    call checked), then compare the greedy tokens with the engine on minirt's kernels."""
    bs = rng.choice((1, 2, 4, 8))
    n = rng.randint(1, 2) if small else rng.randint(2, 4)
    hi = 12 if small else 40
    prompts = [[rng.randrange(256) for _ in range(rng.randint(2, hi))] for _ in range(n)]
    max_tokens = rng.randint(2, 3) if small else rng.randint(3, 8)
    from minirt import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    kw = dict(block_size=bs, num_kv_blocks=64 if small else 128, max_num_batched_tokens=256)
    ref = _engine(**kw)
    spy = _Spy(write, decode, ref.model_config.num_hidden_layers)
    backend = replace(
        TORCH, name="yours", store_kv=spy.store_kv, decode_attention=spy.decode_attention
    )
    mine = _engine(backend, **kw)
    spy.scheduler = mine.scheduler
    size = sum(map(len, prompts))
    case = (
        f"{n} prompts of {[len(p) for p in prompts]} tokens, max_tokens {max_tokens}, "
        f"block_size {bs}"
    )
    try:
        got = mine.generate(prompts, params, use_tqdm=False)
    except Mismatch as e:
        raise Mismatch(f"{case}, {e}", size) from e.__cause__
    if spy.decodes == 0 or spy.writes == 0:
        raise Mismatch(f"{case}: the engine never called your kernels", size)
    want = ref.generate(prompts, params, use_tqdm=False)
    for j, (a, b) in enumerate(zip(got, want, strict=True)):
        if a.token_ids == b.token_ids:
            continue
        pairs = zip(a.token_ids, b.token_ids, strict=False)
        t = next(t for t, (x, y) in enumerate(pairs) if x != y)
        logits = ref.score(prompts[j] + b.token_ids[:t])[-1]  # the reference model, exactly
        gap = float(logits.max() - logits[a.token_ids[t]])
        if gap > 1e-3:  # not a tie within rounding: the kernels changed what the model says
            raise Mismatch(
                f"{case}, request {j + 1}: token {t + 1} is {a.token_ids[t]}, the engine on "
                f"minirt's kernels says {b.token_ids[t]} (its logit is {gap:.3g} higher)",
                size,
            )
    mine.block_manager.check_invariants()


def check_engine(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    _run_engine(learner.write_kv, learner.paged_decode, rng)


# -- task 4: the Triton tier ----------------------------------------------------------------------
TRITON_CASES = 10  # then one short engine run on the kernel


def check_triton(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    from triton.runtime.jit import KernelInterface  # only this task needs triton

    kernel = learner.paged_decode_kernel
    if not isinstance(kernel, KernelInterface):
        raise Mismatch(
            f"paged_decode_kernel is {type(kernel).__name__}; it must be a @triton.jit kernel "
            "(paged_decode_triton launches it)"
        )
    where = learner.paged_decode_triton.__globals__  # the notebook's namespace
    counting = CountingKernel(kernel)
    where["paged_decode_kernel"] = counting
    try:
        _play_triton(learner, rng, i, counting)
    except Exception as e:  # the interpreter wraps what the kernel raised: a stub says so
        cause = e.__cause__ or e.__context__
        if not isinstance(e, Mismatch) and isinstance(cause, NotImplementedError):
            raise cause from None
        raise
    finally:
        where["paged_decode_kernel"] = kernel


def _play_triton(learner: SimpleNamespace, rng: random.Random, i: int, counting) -> None:
    if i == TRITON_CASES:
        _run_engine(store_kv_ref, learner.paged_decode_triton, rng, small=True)
        if counting.launches == 0:
            raise Mismatch(
                "in the engine, paged_decode_kernel was never launched; the tier grades "
                "the Triton kernel, not a PyTorch fallback"
            )
        return
    q, k_cache, v_cache, tables, lens, max_ctx, what = _pool(rng, i, small=True)
    scale = q.shape[-1] ** -0.5
    want = decode_attention_ref(q, k_cache, v_cache, tables, lens, scale, max_ctx)
    call = f"paged_decode_triton(...) on {what}"
    got = learner.paged_decode_triton(
        q.clone(), k_cache.clone(), v_cache.clone(), tables.clone(), lens.clone(), scale,
        max_ctx,
    )  # fmt: skip
    if counting.launches == 0:
        raise Mismatch(
            f"{call}: paged_decode_kernel was never launched; the tier grades the Triton "
            "kernel, not a PyTorch fallback"
        )
    _close(got, want, call, int(lens.sum()) + q.shape[0])


INTERPRET = (("TRITON_INTERPRET", "1"),)
TASKS = [
    Task("1", "write_kv", 2, ("write_kv",), check_write, num_cases=30),
    Task("2", "paged_decode", 4, ("paged_decode",), check_decode, num_cases=40),
    Task("3", "your kernels in the engine", 4, ("write_kv", "paged_decode"), check_engine, 4),
    Task(
        "4",
        "paged_decode_kernel in Triton",
        3,
        ("paged_decode_kernel", "paged_decode_triton"),
        check_triton,
        num_cases=TRITON_CASES + 1,
        env=INTERPRET,
    ),
]
