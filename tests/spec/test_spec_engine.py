"""Speculative decoding in the engine: greedy output identical to the plain engine token for
token (batched, chunked, preempted, prefix-cached), the sampled distribution unchanged, the KV
rolled back without a leaked block, and the trace of each step's proposals and rollback."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from minirt import LLM, SamplingParams
from minirt.sampler import filter_logits
from minirt.spec.rejection import Verdict
from minirt.trace import load_trace

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


def prompts(llm, n: int, seed: int = 0, shared_prefix: int = 0) -> list[list[int]]:
    """n snippets of a Python source file, 1-160 tokens, optionally after a shared prefix."""
    text = Path(json.__file__).read_text()
    g = torch.Generator().manual_seed(seed)
    prefix = llm.tokenizer.encode(text[:shared_prefix]) if shared_prefix else []
    out = []
    for _ in range(n):
        m = int(torch.randint(1, 160, (1,), generator=g))
        start = int(torch.randint(0, len(text) - m, (1,), generator=g))
        out.append(prefix + llm.tokenizer.encode(text[start : start + m]))
    return out


@pytest.fixture(scope="module")
def plain():
    return LLM(device="cpu")


def spec_llm(k: int = 4, **kw) -> LLM:
    return LLM(device="cpu", speculative_model="draft", num_speculative_tokens=k, **kw)


def no_leak(llm: LLM) -> None:
    bm = llm.block_manager
    bm.check_invariants()
    assert bm.num_free_blocks == llm.num_blocks and not bm.tables


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_speculation_is_the_plain_engines_output_token_for_token(plain, k):
    llm = spec_llm(k)
    ps = prompts(llm, 8)
    want = plain.generate(ps, GREEDY, use_tqdm=False)
    got = llm.generate(ps, GREEDY, use_tqdm=False)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    stats = llm.last_stats
    assert stats.num_draft_tokens > 0 and 0 < stats.acceptance_rate <= 1
    assert stats.num_steps < plain.last_stats.num_steps  # several tokens a step
    no_leak(llm)


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_greedy_is_unchanged_under_chunked_prefill_preemption_and_prefix_hits(plain, mode):
    """A pool too small for the batch (preemption, and for swap a draft that recomputes its KV
    after the swap-in), a 64-token step budget (chunked prefill, lookahead cut to fit it), and a
    shared prefix (prefix-cache hits, whose draft KV must be valid too)."""
    llm = spec_llm(4, block_size=16, kv_cache_bytes=24 * 16 * 12288, max_num_batched_tokens=64,
                   preemption_mode=mode, trace=True)  # fmt: skip
    ps = prompts(llm, 8, seed=1, shared_prefix=40)
    want = plain.generate(ps, GREEDY, use_tqdm=False)
    got = llm.generate(ps, GREEDY, use_tqdm=False)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    stats = llm.last_stats
    assert stats.num_preemptions > 0 and stats.num_cached_tokens > 0
    steps = [e for e in llm.recorder.events if e["type"] == "step"]
    assert any(e["swapped_in"] for e in steps) == (mode == "swap")
    assert max(e["num_prefill_tokens"] + e["num_decode_tokens"] for e in steps) <= 64
    no_leak(llm)


def test_every_step_keeps_the_books_and_the_trace_records_each_rollback(monkeypatch):
    llm = spec_llm(5, block_size=4, trace=True)
    real = llm.spec._roll_back
    seen = []

    def checked(seq, guesses, a, emitted):
        real(seq, guesses, a, emitted)
        llm.block_manager.check_invariants()
        table = llm.block_manager.block_table(seq.seq_id)
        # the rollback keeps blocks for x_0 and the accepted guesses only
        assert len(table) == llm.block_manager.blocks_for(seq.num_computed_tokens + 1 + a)
        seen.append(a)

    monkeypatch.setattr(llm.spec, "_roll_back", checked)
    llm.generate(prompts(llm, 4, seed=2), GREEDY, use_tqdm=False)
    assert len(seen) > 0 and min(seen) < 5  # some rejections happened
    no_leak(llm)

    events = load_trace(json.loads(json.dumps(llm.recorder.to_dict()))).events  # as from a file
    specs = [s for e in events if e["type"] == "step" for s in e["spec"]]
    assert len(specs) == len(seen)
    for e in (e for e in events if e["type"] == "step"):
        computed = {s["seq_id"]: s["num_computed_tokens"] for s in e["scheduled"]}
        for s in e["spec"]:  # recorded before the step: x_0's position; k lookahead slots after
            slots = computed[s["seq_id"]] + 1 + len(s["proposed"])
            assert len(s["table_before"]) == llm.block_manager.blocks_for(slots)
    for s in specs:
        assert 1 <= len(s["proposed"]) <= 5  # fewer near max_tokens
        assert s["emitted"][:-1] == s["proposed"][: s["num_accepted"]]
        assert len(s["emitted"]) == s["num_accepted"] + 1
        assert set(s["freed_blocks"]) <= set(s["table_before"])
    # block_size 4 and 5 guesses: a rejection early on frees whole lookahead blocks
    assert any(s["freed_blocks"] for s in specs)


def test_a_stop_among_the_accepted_guesses_ends_the_sequence_there(plain):
    """max_tokens and EOS cut a step's tokens exactly where the plain engine would stop."""
    llm = spec_llm(6)
    ps = prompts(llm, 6, seed=3)
    for p in (SamplingParams(temperature=0, max_tokens=m) for m in (1, 2, 7, 13)):
        want = plain.generate(ps, p, use_tqdm=False)
        got = llm.generate(ps, p, use_tqdm=False)
        assert [(o.token_ids, o.finish_reason) for o in got] == [
            (o.token_ids, o.finish_reason) for o in want
        ]
    no_leak(llm)


# --- sampling: the distribution is the target's ----------------------------------------------

SAMPLED = dict(temperature=1.0, top_k=6, max_tokens=4, ignore_eos=True)
N = 800


def second_tokens(llm: LLM, prompt: list[int]) -> np.ndarray:
    """The 2nd token of N seeded samples. The 1st comes from the prefill; with speculation the
    2nd comes out of a verify of k = 2 guesses (accepted d_1, or drawn from the residual)."""
    params = [SamplingParams(**SAMPLED, seed=i) for i in range(N)]
    outs = llm.generate([prompt] * N, params, use_tqdm=False)
    return np.array([o.token_ids[1] for o in outs])


def homogeneity_p(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square test that two samples come from one distribution (rare tokens pooled)."""
    values = sorted(set(a) | set(b))
    table = np.array([[np.sum(x == v) for v in values] for x in (a, b)])
    common = table.sum(0) >= 10
    table = np.column_stack([table[:, common], table[:, ~common].sum(1)])
    table = table[:, table.sum(0) > 0]
    return chi2_contingency(table).pvalue


@pytest.fixture(scope="module")
def sampled_reference(plain):
    prompt = plain.tokenizer.encode("The ")  # many likely next words: a spread distribution
    return prompt, second_tokens(plain, prompt)


@pytest.mark.slow
def test_sampled_tokens_follow_the_targets_distribution(sampled_reference):
    prompt, want = sampled_reference
    llm = spec_llm(2, max_num_seqs=512, kv_cache_bytes=2**30)
    got = second_tokens(llm, prompt)
    assert llm.last_stats.num_draft_tokens > 0
    assert homogeneity_p(got, want) > 1e-3
    no_leak(llm)


@pytest.mark.slow
def test_the_test_catches_a_rule_that_keeps_every_guess(sampled_reference):
    """Accepting every guess emits the draft's distribution: the same test must reject it. The
    wrong rule goes in as the engine's verifier (a named part)."""

    def accept_all(drafts, q, p_logits, params, generator=None):
        b, k = drafts.shape
        p = torch.stack([filter_logits(row, params).softmax(-1) for row in p_logits[0]])
        bonus = torch.multinomial(p[k], 1, generator=generator).tolist()
        return Verdict([k] * b, [d + bonus for d in drafts.tolist()])

    prompt, want = sampled_reference
    llm = spec_llm(2, max_num_seqs=512, kv_cache_bytes=2**30, spec_verifier=accept_all)
    assert homogeneity_p(second_tokens(llm, prompt), want) < 1e-3


# --- bad input ----------------------------------------------------------------------------


def test_speculation_needs_a_draft_and_k():
    with pytest.raises(ValueError, match="set speculative_model"):
        LLM(device="cpu", num_speculative_tokens=3)
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        LLM(device="cpu", speculative_model="draft")
    with pytest.raises(ValueError, match=r"in \[0, 16\]"):
        LLM(device="cpu", speculative_model="draft", num_speculative_tokens=17)


def test_a_draft_with_another_vocabulary_is_refused(tmp_path):
    from tests.conftest import make_hf_checkpoint

    make_hf_checkpoint(tmp_path, vocab_size=300)
    with pytest.raises(ValueError, match="share the target's tokenizer"):
        LLM(device="cpu", speculative_model=str(tmp_path), num_speculative_tokens=2)


# --- CUDA ---------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cuda_greedy_speculation_is_the_plain_engines_output(backend):
    """fp32 on the GPU (bf16 rounding would let near-ties flip between the plain engine's decode
    kernel and the verify's prefill kernel): the same tokens, with and without speculation."""
    kw = dict(device="cuda", dtype="float32", kv_cache_bytes=64 * 2**20, kernel_backend=backend)
    plain_gpu = LLM(**kw)
    llm = LLM(**kw, speculative_model="draft", num_speculative_tokens=4)
    ps = prompts(llm, 16, seed=4)
    want = plain_gpu.generate(ps, GREEDY, use_tqdm=False)
    got = llm.generate(ps, GREEDY, use_tqdm=False)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert llm.last_stats.acceptance_rate > 0.3
    no_leak(llm)
