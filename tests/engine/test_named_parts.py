"""The sampler and the speculative verifier are named parts: functions written here, with the
signatures of minirt.sampler.sample and minirt.spec.rejection.verify, run inside the engine and
give the tokens minirt's own give. (The prefix cache, the policy and the kernel backend have
their own tests: tests/engine/test_prefix_policies.py, tests/kernels/test_backend.py.)"""

import pytest

from minirt import LLM, SamplingParams
from minirt.spec.rejection import Verdict

SMALL = {"device": "cpu", "max_num_batched_tokens": 64}
PROMPTS = ["def f(x):", "import json\n", "class A:"]
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def argmax_sampler(logits, params, generators):
    """A greedy-only sampler: the highest logit of each row."""
    assert all(p.greedy for p in params), "this sampler only does greedy"
    argmax_sampler.calls += 1
    return [int(row.argmax()) for row in logits]


def accept_while_argmax(drafts, q, p_logits, params, generator):
    """Greedy verification written out: keep guesses while they are the target's argmax, then
    emit the target's own token (after the last guess: the bonus token)."""
    accept_while_argmax.calls += 1
    best = p_logits.argmax(-1)  # [b, k + 1]
    accepted, tokens = [], []
    for row, guesses in zip(best.tolist(), drafts.tolist(), strict=True):
        a = 0
        while a < len(guesses) and guesses[a] == row[a]:
            a += 1
        accepted.append(a)
        tokens.append(guesses[:a] + [row[a]])
    return Verdict(num_accepted=accepted, tokens=tokens)


@pytest.fixture(scope="module")
def want():
    return [o.token_ids for o in LLM(**SMALL).generate(PROMPTS, GREEDY, use_tqdm=False)]


@pytest.mark.parametrize("overlap", [False, True])
def test_a_sampler_written_here_gives_the_engines_greedy_tokens(want, overlap):
    argmax_sampler.calls = 0
    llm = LLM(**SMALL, sampler=argmax_sampler, overlap_schedule=overlap)
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)] == want
    assert argmax_sampler.calls > 0


def test_a_verifier_written_here_gives_the_engines_greedy_tokens(want):
    accept_while_argmax.calls = 0
    llm = LLM(**SMALL, speculative_model="draft", num_speculative_tokens=3,
              spec_verifier=accept_while_argmax)  # fmt: skip
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)] == want
    assert accept_while_argmax.calls > 0 and llm.last_stats.num_accepted_tokens > 0


def test_a_part_that_is_not_a_function_is_refused_by_name():
    with pytest.raises(ValueError, match="sampler must be a function"):
        LLM(**SMALL, sampler="greedy")
