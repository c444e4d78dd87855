"""The sampler, the speculative verifier and the scheduler are named parts: functions (a class)
written here, with the signatures of minirt.sampler.sample and minirt.spec.rejection.verify (the
interface of minirt.sched.SchedulerBase), run inside the engine and give the tokens minirt's own
give. (The prefix cache, the policy and the kernel backend have
their own tests: tests/engine/test_prefix_policies.py, tests/kernels/test_backend.py.)"""

import pytest

from minirt import LLM, SamplingParams
from minirt.sched import Batch, SchedulerBase, SequenceStatus
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


class OneAtATime(SchedulerBase):
    """The plainest scheduler: one request at a time, its whole prompt in one step, then its
    decodes, one a step (no batching at all; the queues and the rest are SchedulerBase's)."""

    def schedule(self) -> Batch:
        batch = Batch(step=self.num_steps)
        if not self.running:
            seq = self.waiting.popleft()
            self.bm.allocate(seq.seq_id, [], seq.num_tokens)  # no tokens given: no cache hits
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
        seq = self.running[0]
        self.bm.append(seq.seq_id, seq.num_tokens)
        batch.add(seq, seq.num_tokens - seq.num_computed_tokens)
        return self._done(batch)


def test_a_scheduler_class_written_here_runs_the_engine_one_request_at_a_time(want):
    llm = LLM(**SMALL, scheduler=OneAtATime)
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)] == want
    assert isinstance(llm.scheduler, OneAtATime)
    assert llm.last_stats.num_steps == len(PROMPTS) * GREEDY.max_tokens  # a prefill, then 11
    assert llm.block_manager.num_free_blocks == llm.num_blocks  # every block came back


def test_a_scheduler_that_is_not_a_class_is_refused():
    with pytest.raises(ValueError, match="scheduler must be a class"):
        LLM(**SMALL, scheduler="fcfs")
