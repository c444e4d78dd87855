"""The engine on either kernel backend: the Triton kernels (in Triton's interpreter on the CPU)
must give the references' tokens; bad backend names fail with what to do."""

import pytest
import torch

from minirt import LLM, SamplingParams
from minirt.config import KERNEL_BACKENDS
from minirt.engine.cuda_graph import default_graph_sizes
from minirt.kernels.backend import BACKENDS, CPU, TORCH, TRITON, get_backend


def test_auto_backend_is_triton_on_cuda_and_the_cpu_path_on_cpu():
    assert get_backend("auto", "cpu") is CPU
    assert get_backend("auto", "cuda") is TRITON


def test_the_configs_backend_names_are_the_registrys():
    assert KERNEL_BACKENDS == ("auto", *BACKENDS)
    LLM(device="cpu", kernel_backend="cpu")  # accepted by name, like "torch"


def test_an_unknown_backend_name_says_which_exist():
    with pytest.raises(ValueError, match="auto, torch, triton"):
        get_backend("cuda-c", "cpu")
    with pytest.raises(ValueError, match="kernel_backend"):
        LLM(device="cpu", kernel_backend="fast")


def test_triton_on_cpu_without_the_interpreter_says_how_to_enable_it(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        get_backend("triton", "cpu")


def test_graph_sizes_climb_vllms_ladder_and_end_at_max_num_seqs():
    assert default_graph_sizes(256)[:6] == [1, 2, 4, 8, 16, 32]
    assert default_graph_sizes(256)[-1] == 256
    assert default_graph_sizes(20) == [1, 2, 4, 8, 16, 20]
    assert default_graph_sizes(1) == [1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter path is the CPU's")
def test_engine_on_triton_kernels_in_the_interpreter_gives_the_reference_tokens(qwen3_checkpoint):
    """Prefill (two chunks), decode and a shared prefix, all through the Triton kernels."""
    folder, _ = qwen3_checkpoint
    prompts = [list(range(40, 80)), list(range(40, 72)) + [7, 8, 9]]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    kw = dict(device="cpu", max_num_batched_tokens=32, block_size=16)
    ours = LLM(folder, kernel_backend="triton", **kw).generate(prompts, params, use_tqdm=False)
    ref = LLM(folder, kernel_backend="torch", **kw).generate(prompts, params, use_tqdm=False)
    assert [o.token_ids for o in ours] == [o.token_ids for o in ref]
    assert ours[1].num_cached_tokens == 32


def test_score_gives_the_logits_of_every_prefix_and_frees_its_blocks(embedded_llm):
    llm = embedded_llm
    prompt = llm.tokenizer.encode("def add(a, b):\n    return a + b\n")
    logits = llm.score(prompt)
    assert logits.shape == (len(prompt), llm.model_config.vocab_size)
    # The last row is what generate() samples from: greedy must pick its argmax.
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=1), use_tqdm=False)
    assert out[0].token_ids[0] == int(logits[-1].argmax())
    assert llm.block_manager.num_free_blocks == llm.num_blocks


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_the_padded_static_buffer_decode_path_gives_the_eager_tokens(qwen3_checkpoint, backend):
    """What a CUDA graph replays, run on the CPU without capture: batches padded up to a size
    (padding rows: slot -1, context 0) must not change any token."""
    from minirt.engine.cuda_graph import DecodeGraphs

    folder, _ = qwen3_checkpoint
    prompts = [list(range(40, 40 + n)) for n in (5, 23, 17)]
    params = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True) for m in (9, 6, 3)]
    eager = LLM(folder, device="cpu", kernel_backend=backend)
    padded = LLM(folder, device="cpu", kernel_backend=backend)
    graphs = DecodeGraphs(padded.model, [2, 4], 512 // 16, 512, torch.device("cpu"))
    padded.runner.graphs = graphs  # 3 sequences padded to 4, then 2, then 1 padded to 2
    a = [o.token_ids for o in eager.generate(prompts, params, use_tqdm=False)]
    b = [o.token_ids for o in padded.generate(prompts, params, use_tqdm=False)]
    assert a == b
    assert padded.block_manager.num_free_blocks == padded.num_blocks


def test_a_backend_of_the_learners_own_runs_the_engine_and_a_missing_role_is_named():
    """A named part: the kernel backend. Attention written in the test (the reference, counted)
    gives the same tokens as the default; a backend without a role is refused by name."""
    from dataclasses import replace

    from minirt.kernels.decode_attention import decode_attention_ref

    calls = []

    def my_decode_attention(*args, **kwargs):
        calls.append(1)
        return decode_attention_ref(*args, **kwargs)

    mine = replace(TORCH, name="mine", decode_attention=my_decode_attention)
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    want = LLM(device="cpu").generate(["def f(x):"], params, use_tqdm=False)[0].token_ids
    llm = LLM(device="cpu", kernel_backend=mine, trace=True)
    assert llm.generate(["def f(x):"], params, use_tqdm=False)[0].token_ids == want
    assert calls, "the engine never called the learner's decode attention"
    assert llm.recorder.meta["engine_config"]["kernel_backend"] == "mine"
    with pytest.raises(ValueError, match="lacks callable rms_norm"):
        LLM(device="cpu", kernel_backend=replace(TORCH, name="half", rms_norm=None))
