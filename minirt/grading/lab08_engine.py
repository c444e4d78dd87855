"""Lab 8, tasks 3 and 5: the learner's kernels run the engine, `LLM(kernel_backend=...)`.

Each case runs the engine on a fresh short greedy workload twice: in the grader's worker on the
learner's kernels (`run`), each call they get checked against minirt's reference on the very same
pool and arguments (a `_Spy`: a difference names its step and layer), and in the parent on
minirt's own kernels (`expect`). `compare` then compares the two runs step by step
(`engine_runs.compare_rounds`: what was scheduled, the block tables, the tokens). Sums in another
order round differently: a token may differ only where the reference model itself is tied within
rounding (the parent's run records, for every generated token, the tokens tied with it).
"""

from __future__ import annotations

import random
from dataclasses import replace

from minirt.grading.core import Mismatch
from minirt.grading.engine_runs import compare_rounds, rounds_record
from minirt.grading.lab08_pools import close

TIE = 1e-3  # logits this close to the best are a tie within rounding


class _Spy:
    """The kernels the learner's engine runs: each call is the learner's (`roles`: store_kv,
    decode_attention and prefill_attention, those given), checked against minirt's reference
    on the very same pool; the step and the layer name a difference."""

    def __init__(self, roles: dict, reference, num_layers: int):
        self.roles, self.reference, self.num_layers = roles, reference, num_layers
        self.scheduler = None
        self.calls = dict.fromkeys(("store_kv", "decode_attention", "prefill_attention"), 0)

    def _call(self, role: str, where: str, *args):
        """The learner's kernel for `role` on `args`; a crash is named by its step and layer."""
        try:
            return self.roles[role](*args)
        except (NotImplementedError, Mismatch):
            raise
        except Exception as e:
            cause = e.__cause__ or e.__context__  # Triton's interpreter wraps what a kernel raised
            if isinstance(cause, NotImplementedError):
                raise cause from None
            raise Mismatch(f"{where}: your {role} raised {type(e).__name__}: {e}") from e

    def backend(self):
        spied = {r: getattr(self, r) for r in self.roles}
        return replace(self.reference, name="yours", **spied)

    def _where(self, role: str) -> str:
        calls = self.calls[role]
        self.calls[role] += 1
        step = self.scheduler.num_steps - 1 if self.scheduler is not None else "?"
        return f"step {step}, layer {calls % self.num_layers}"

    def store_kv(self, k, v, k_cache, v_cache, slot_mapping) -> None:
        where = self._where("store_kv")
        want_k, want_v = k_cache.clone(), v_cache.clone()
        self.reference.store_kv(k, v, want_k, want_v, slot_mapping)
        self._call("store_kv", where, k, v, k_cache, v_cache, slot_mapping)
        for name, mine, want in (("k_cache", k_cache, want_k), ("v_cache", v_cache, want_v)):
            if not ((mine == want) | (mine.isnan() & want.isnan())).all():
                raise Mismatch(
                    f"{where}: after write_kv of {k.shape[0]} tokens at slots "
                    f"{slot_mapping.tolist()}, the {name} differs from what store_kv_ref writes"
                )

    def decode_attention(self, *args, num_splits=None):
        # args: q, k_cache, v_cache, block_tables, context_lens, scale, max_context_len
        where = self._where("decode_attention")
        q, context_lens = args[0], args[4]
        want = self.reference.decode_attention(*args)
        got = self._call("decode_attention", where, *args)
        lens = context_lens.tolist()
        close(got, want, f"{where}: the decode of {q.shape[0]} sequences with contexts {lens}", 0)
        return got

    def prefill_attention(self, *args):
        # args: q, k_cache, v_cache, block_tables, context_lens, query_start_loc, scale,
        # max_query_len, max_context_len
        where = self._where("prefill_attention")
        context_lens, query_start_loc = args[4], args[5]
        want = self.reference.prefill_attention(*args)
        got = self._call("prefill_attention", where, *args)
        starts = query_start_loc.tolist()
        q_lens = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        call = (
            f"{where}: the prefill of {len(q_lens)} sequences, {q_lens} new tokens in contexts "
            f"{context_lens.tolist()}"
        )
        close(got, want, call, 0, rows="token")
        return got


def draw(rng: random.Random, i: int, small: bool = False) -> dict:
    """Case `i`: a few prompts (token ids), a block size and a short greedy run."""
    n = 2 if small else rng.randint(2, 4)  # small: one case in the interpreter, two prompts
    hi = 8 if small else 40
    prompts = [[rng.randrange(256) for _ in range(rng.randint(2, hi))] for _ in range(n)]
    return {
        "prompts": prompts,
        "block_size": rng.choice((2, 4)) if small else rng.choice((1, 2, 4, 8)),
        "max_tokens": 3 if small else rng.randint(3, 8),  # small: a prefill, two decodes
        "num_kv_blocks": 48 if small else 128,
    }


def _engine(case: dict, backend="torch"):
    from minirt import LLM  # the engine, only for these tasks

    return LLM(
        device="cpu",
        kernel_backend=backend,
        block_size=case["block_size"],
        num_kv_blocks=case["num_kv_blocks"],
        max_num_batched_tokens=256,
        trace=True,
    )


def _params(case: dict):
    from minirt import SamplingParams

    return SamplingParams(temperature=0, max_tokens=case["max_tokens"], ignore_eos=True)


def run(roles: dict, case: dict) -> dict:
    """In the worker: the engine on the learner's kernels (`roles`), every call checked."""
    from minirt.kernels.backend import TORCH

    spy = _Spy(roles, TORCH, num_layers=1)
    llm = _engine(case, spy.backend())
    spy.scheduler, spy.num_layers = llm.scheduler, llm.model_config.num_hidden_layers
    try:
        rounds = rounds_record(llm, [case["prompts"]], _params(case))
    except Mismatch as e:
        raise Mismatch(f"{about(case)}, {e}", size(case)) from e.__cause__
    llm.block_manager.check_invariants()
    return {"rounds": rounds, "calls": dict(spy.calls)}


def expect(case: dict) -> dict:
    """In the parent: the engine on minirt's kernels, and for every generated token the tokens
    whose logit ties with it within rounding (the reference model's own)."""
    llm = _engine(case)
    rounds = rounds_record(llm, [case["prompts"]], _params(case))
    ties = []
    for prompt, out in zip(case["prompts"], rounds[0]["outputs"], strict=True):
        logits = llm.score(prompt + out["token_ids"][:-1])[len(prompt) - 1 :]
        best = logits.max(-1, keepdim=True).values
        near = logits >= best - TIE  # [generated tokens, vocab]
        ties.append([row.nonzero().flatten().tolist() for row in near])
    calls = {"store_kv": 1, "decode_attention": 1, "prefill_attention": 1}
    return {"rounds": rounds, "calls": calls, "ties": ties}


def about(case: dict) -> str:
    lens = [len(p) for p in case["prompts"]]
    return (
        f"{len(lens)} prompts of {lens} tokens, max_tokens {case['max_tokens']}, "
        f"block_size {case['block_size']}"
    )


def size(case: dict) -> int:
    return sum(len(p) for p in case["prompts"])


def compare(got: dict, want: dict, case: dict, roles=("store_kv", "decode_attention")) -> None:
    never = [r for r in roles if not got["calls"].get(r)]
    if never:
        raise Mismatch(f"{about(case)}: the engine never called your {never[0]}", size(case))
    mine = got["rounds"][0]["outputs"]
    for j, (a, b) in enumerate(zip(mine, want["rounds"][0]["outputs"], strict=True)):
        pairs = zip(a["token_ids"], b["token_ids"], strict=False)
        t = next((t for t, (x, y) in enumerate(pairs) if x != y), None)
        if t is not None and a["token_ids"][t] in want["ties"][j][t]:
            a["token_ids"] = b["token_ids"]  # a tie within rounding: either token is right
    hints = {"tokens": "your kernels changed what the model computes"}
    compare_rounds(got["rounds"], want["rounds"], about(case), size(case), hints)
