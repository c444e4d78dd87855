import torch
from hypothesis import given
from hypothesis import strategies as st

from minirt.sampler import filter_logits, sample
from minirt.sampling_params import SamplingParams


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([0.1, 3.0, 2.0, -1.0, 2.5])
    kept = filter_logits(logits, SamplingParams(top_k=2)).isfinite()
    assert kept.tolist() == [False, True, False, False, True]


@given(st.lists(st.floats(-5, 5), min_size=2, max_size=30), st.floats(0.05, 1.0))
def test_top_p_keeps_the_smallest_set_reaching_p(values, p):
    logits = torch.tensor(values)
    kept = filter_logits(logits, SamplingParams(top_p=p)).isfinite()
    probs = logits.softmax(-1)
    assert probs[kept].sum() >= p - 1e-5  # the kept mass reaches p
    # minimal: dropping the least likely kept token would fall below p (ties aside)
    if kept.sum() > 1:
        assert probs[kept].sum() - probs[kept].min() < p + 1e-5
    assert probs[kept].max() == probs.max()  # a most likely token always stays


def test_greedy_rows_ignore_the_generator_and_take_the_argmax():
    logits = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    assert sample(logits, [SamplingParams(temperature=0)] * 2, [g, g]) == [1, 0]


def test_sampling_follows_the_tempered_distribution():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    g = torch.Generator().manual_seed(0)
    draws = sample(logits.repeat(4000, 1), [SamplingParams(temperature=1.0)] * 4000, [g] * 4000)
    freq = torch.bincount(torch.tensor(draws), minlength=3) / 4000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.03)
