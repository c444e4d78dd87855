import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minirt.sampler import draw, filter_logits, sample
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


@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(2, 400))
def test_draw_is_torch_multinomials_token(seed, rows, vocab):
    probs = torch.rand(rows, vocab, generator=torch.Generator().manual_seed(seed)).softmax(-1)
    want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
    assert draw(probs, torch.Generator().manual_seed(seed)).tolist() == want[:, 0].tolist()


@given(st.integers(0, 2**16), st.sampled_from([-1, 1, 3, 6]), st.floats(0.05, 1.0))
def test_filtering_rows_together_is_filtering_each_alone(seed, top_k, top_p):
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(seed))
    params = SamplingParams(temperature=0.7, top_k=top_k, top_p=top_p)
    alone = torch.stack([filter_logits(row, params) for row in logits])
    assert torch.equal(filter_logits(logits, params), alone)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_draw_on_the_gpu_is_multinomials_token_and_does_not_wait():
    probs = torch.rand(4, 151936, device="cuda").softmax(-1)
    for seed in range(20):
        want = torch.multinomial(probs, 1, generator=torch.Generator("cuda").manual_seed(seed))
        got = draw(probs, torch.Generator("cuda").manual_seed(seed))
        assert got.tolist() == want[:, 0].tolist()
    # The GPU busy for a while (~1 s of spinning), then an event: draw returns with the GPU still
    # spinning (it reads nothing back to the host)
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)
    spun = torch.cuda.Event()
    spun.record()
    draw(probs)
    assert not spun.query()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_logits_give_the_tokens_of_their_fp32_copy(dtype):
    """The engine hands the default sampler the LM head's own 16-bit logits: argmax on them
    (ties included: 16-bit values tie often) and draws after the upcast match the fp32 copy."""
    from minirt.sampler import sample_on_device

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 500, generator=g) * 4).to(dtype)
    logits[0, 7] = logits[0, 300] = logits[0].max() + 1  # an exact tie: the first index wins
    params = [SamplingParams(temperature=0)] * 3 + [SamplingParams(temperature=0.8, top_p=0.9)] * 3
    tokens = []
    for x in (logits, logits.float()):
        gens = [torch.Generator().manual_seed(i) for i in range(6)]
        tokens.append(sample_on_device(x, params, gens).tolist())
    assert tokens[0] == tokens[1] and tokens[0][0] == 7


def test_an_argmax_taken_by_the_forward_is_used_and_the_drawn_rows_written_into_it():
    """A decode graph hands the sampler the argmax its LM head's kernel took: greedy rows keep
    it, sampled rows are drawn exactly as without it, into the same tensor."""
    from minirt.sampler import sample_on_device

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 300, generator=g) * 3
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.9, top_k=50)] * 2
    plain = sample_on_device(logits, params, [torch.Generator().manual_seed(i) for i in range(4)])
    given = logits.argmax(-1)
    given[0] = 299  # not the argmax: the sampler must not take it again
    out = sample_on_device(
        logits, params, [torch.Generator().manual_seed(i) for i in range(4)], given
    )
    assert out is given
    assert out.tolist() == [299, plain[1].item(), plain[2].item(), plain[3].item()]
