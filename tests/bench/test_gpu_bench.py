"""bench gpu's compiled peer (transformers' static cache + a compiled one-token step) runs on the
CPU too: its loop must give the tokens `generate` gives, or its timings would time other work."""

import torch
from transformers import AutoModelForCausalLM

from minirt.bench import gpu
from tests.conftest import make_hf_checkpoint


def test_the_compiled_loop_decodes_what_generate_decodes(tmp_path, monkeypatch):
    make_hf_checkpoint(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    monkeypatch.setattr(gpu, "PROMPT_LEN", 8)
    monkeypatch.setattr(gpu, "NEW_TOKENS", 6)
    runs = []
    monkeypatch.setattr(gpu, "decode_rate", lambda generate, b, n: runs.append(generate(n)) or {})
    row = gpu.compiled_loop_decode(model, batch=2, mode="default")
    assert row["system"] == "hf-compiled-loop" and row["greedy_equal_to_generate"] is True
    ids = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(1))
    want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                          min_new_tokens=6, do_sample=False, pad_token_id=0)  # fmt: skip
    assert torch.equal(runs[0], want[:, 8:])


def test_prompt_steps_time_both_modes_and_leave_the_graphs_in_place(embedded_llm, monkeypatch):
    monkeypatch.setattr(gpu, "PROMPT_SHAPES", ((1, 8), (2, 5)))
    llm = embedded_llm
    saved = llm.runner.graphs, llm.runner.piece_graphs
    rows = gpu.prompt_steps(llm, reps=1)
    assert [(r["mode"], r["prompts"], r["prompt_len"]) for r in rows] == [
        ("piecewise", 1, 8),
        ("piecewise", 2, 5),
        ("eager", 1, 8),
        ("eager", 2, 5),
    ]
    assert all(r["ms"] >= r["ms_min"] > 0 for r in rows)
    assert (llm.runner.graphs, llm.runner.piece_graphs) == saved
    assert llm.block_manager.num_free_blocks == llm.num_blocks
