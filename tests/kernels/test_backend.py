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


def test_triton_in_the_interpreter_refuses_bfloat16_and_says_which_dtypes_work():
    with pytest.raises(ValueError, match="float32' or 'float16"):
        get_backend("triton", "cpu", torch.bfloat16)
    assert get_backend("triton", "cpu", torch.float16) is TRITON


def test_graph_sizes_climb_vllms_ladder_and_end_at_max_num_seqs():
    assert default_graph_sizes(256)[:6] == [1, 2, 4, 8, 16, 32]
    assert default_graph_sizes(256)[-1] == 256
    assert default_graph_sizes(20) == [1, 2, 4, 8, 16, 20]
    assert default_graph_sizes(1) == [1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter path is the CPU's")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_engine_on_triton_kernels_in_the_interpreter_gives_the_reference_tokens(
    qwen3_checkpoint, dtype
):
    """Prefill (two chunks), decode and a shared prefix, all through the Triton kernels."""
    folder, _ = qwen3_checkpoint
    prompts = [list(range(40, 80)), list(range(40, 72)) + [7, 8, 9]]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    kw = dict(device="cpu", max_num_batched_tokens=32, block_size=16, dtype=dtype)
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


@pytest.mark.parametrize("backend", ["torch", "triton", "triton+head"])
@pytest.mark.parametrize("overlap", [False, True])
def test_the_padded_static_buffer_decode_path_gives_the_eager_tokens(
    qwen3_checkpoint, monkeypatch, backend, overlap
):
    """What a CUDA graph replays, run on the CPU without capture: batches padded up to a size
    (padding rows: slot -1, context 0), inputs unpacked from one buffer (the overlapped loop's
    placeholders resolved there), the argmax taken in the LM head's kernel with Triton's
    kernels (the GEMV at two rows; "+head": the tensor-core head at four): no token may
    change."""
    from minirt.engine.cuda_graph import DecodeGraphs
    from minirt.kernels import lm_head

    folder, _ = qwen3_checkpoint
    head = backend == "triton+head"
    if head:
        monkeypatch.setattr(lm_head, "MAX_ROWS", 256)
        backend = "triton"
    prompts = [list(range(40, 40 + n)) for n in (5, 23, 17)]
    params = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True) for m in (9, 6, 3)]
    eager = LLM(folder, device="cpu", kernel_backend=backend)
    padded = LLM(folder, device="cpu", kernel_backend=backend, overlap_schedule=overlap)
    graphs = DecodeGraphs(padded.model, [2, 4], 512 // 16, 512, torch.device("cpu"))
    padded.runner.graphs = graphs  # 3 sequences padded to 4, then 2, then 1 padded to 2
    assert padded.model.argmax_in_head(2) == (backend == "triton")  # the GEMV
    assert padded.model.argmax_in_head(4) == head  # the tensor-core head
    a = [o.token_ids for o in eager.generate(prompts, params, use_tqdm=False)]
    b = [o.token_ids for o in padded.generate(prompts, params, use_tqdm=False)]
    assert a == b
    assert padded.block_manager.num_free_blocks == padded.num_blocks


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_the_piecewise_path_gives_the_eager_tokens_and_logits(qwen3_checkpoint, backend):
    """What the piecewise graphs replay, run on the CPU without capture: steps of prompts,
    chunks, shared prefixes and mixes padded to 16 or 64 tokens (padding rows store nothing),
    attention eager between the pieces."""
    from minirt.engine.cuda_graph import PieceGraphs

    folder, _ = qwen3_checkpoint
    shared = list(range(100, 140))
    prompts = [shared + list(range(40, 40 + n)) for n in (5, 23, 17)] + [list(range(9, 20))]
    params = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True) for m in (9, 6, 3, 5)]
    kw = dict(device="cpu", kernel_backend=backend, max_num_batched_tokens=48, max_num_seqs=4)
    eager = LLM(folder, **kw)
    pieces = LLM(folder, **kw)
    pieces.runner.piece_graphs = PieceGraphs(pieces.model, [16, 64], torch.device("cpu"))
    calls = []
    forward = pieces.runner.piece_graphs.forward
    pieces.runner.piece_graphs.forward = lambda *a: calls.append(len(a[0])) or forward(*a)
    a = [o.token_ids for o in eager.generate(prompts, params, use_tqdm=False)]
    b = [o.token_ids for o in pieces.generate(prompts, params, use_tqdm=False)]
    assert a == b
    assert any(n < 16 for n in calls) and any(16 < n < 64 for n in calls)  # both sizes padded
    assert len(calls) == pieces.scheduler.num_steps  # no decode graphs here: every step
    assert pieces.block_manager.num_free_blocks == pieces.num_blocks
    text = list(range(60, 85))  # 25 tokens: one step padded to 64, every position's logits
    torch.testing.assert_close(pieces.score(text), eager.score(text), rtol=1e-4, atol=1e-4)


def test_the_piecewise_paths_padding_rows_store_nothing(qwen3_checkpoint):
    """A step of 3 tokens after one of 10 at the same size: rows 3-9 still hold the last step's
    ids, positions and slots, and must not write the pool (those blocks may be another
    sequence's by now)."""
    from minirt.engine.cuda_graph import PieceGraphs
    from minirt.model.attention import AttentionMetadata

    folder, _ = qwen3_checkpoint
    llm = LLM(folder, device="cpu", kernel_backend="triton")
    pieces = PieceGraphs(llm.model, [16], torch.device("cpu"))
    bs = llm.config.block_size

    def step(block: int, n: int) -> None:
        i64 = dict(dtype=torch.int64)
        meta = AttentionMetadata(slot_mapping=torch.arange(n) + block * bs,
                                 query_start_loc=torch.tensor([0, n]),
                                 context_lens=torch.tensor([n]),
                                 block_tables=torch.tensor([[block]], **i64),
                                 max_query_len=n, max_context_len=n)  # fmt: skip
        with torch.inference_mode():
            pieces.forward(torch.arange(50, 50 + n), torch.arange(n), meta)

    step(block=0, n=10)
    llm.kv_pool.zero_()
    step(block=1, n=3)
    written = llm.kv_pool.flatten(4).abs().sum(-1).nonzero()[:, 2:].unique(dim=0)  # block, slot
    assert written.tolist() == [[1, 0], [1, 1], [1, 2]]


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
