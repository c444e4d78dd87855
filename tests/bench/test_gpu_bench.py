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
