"""Model cards (README.md) of the embedded models, written from what training and eval measured.

Every number on a card comes from `training.json` (written by the training run) or from the
eval stage of `python -m minirt.model.train`; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

USAGE = """## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

folder = "minirt/model/embedded/{name}"
model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
ids = model.generate(**tok("def fib(n):", return_tensors="pt"), max_new_tokens=40)
print(tok.decode(ids[0]))
```

"""
LIMITS = """## Limits

A teaching model: it writes Python-looking text, not correct programs. Greedy decoding of a
byte model this small falls into loops, as the samples show. On a 10 MB corpus the target
over-fits after about ten epochs (its held-out loss rises while the training loss keeps
falling), which is why training keeps the weights of the best held-out check.
"""


def write_cards(target_dir: Path, draft_dir: Path, result: dict) -> None:
    """README.md model cards from each folder's training.json and the eval result."""
    infos = {d: json.loads((d / "training.json").read_text()) for d in (target_dir, draft_dir)}
    ratio = infos[target_dir]["params"] / infos[draft_dir]["params"]
    for folder, info in infos.items():
        nats = result[f"{info['stage']}_val_nats_per_byte"]
        (folder / "README.md").write_text(card_text(folder, info, infos, nats, ratio, result))


def card_text(
    folder: Path, info: dict, infos: dict, nats: float, ratio: float, result: dict
) -> str:
    a, c, cfg = info["args"], info["corpus"], json.loads((folder / "config.json").read_text())
    is_target = info["stage"] == "target"
    role = (
        f"The target model of minirt's embedded pair; its draft is {ratio:.1f}x smaller."
        if is_target
        else f"The draft model of minirt's embedded pair, {ratio:.1f}x smaller than the target, "
        f"distilled from the target's logits "
        f"(loss = {a['kl_weight']} KL + {1 - a['kl_weight']:.2g} CE)."
    )
    size_mb = (folder / "model.safetensors").stat().st_size / 1e6
    epochs = info["tokens_seen"] / max(1, c["train_tokens"])
    rows = [
        ("architecture", f"Qwen3 (`Qwen3ForCausalLM`): hidden {cfg['hidden_size']}, "
         f"{cfg['num_hidden_layers']} layers, {cfg['num_attention_heads']} query / "
         f"{cfg['num_key_value_heads']} KV heads of dim {cfg['head_dim']}, SwiGLU "
         f"{cfg['intermediate_size']}, RoPE, q/k-norm, tied embeddings"),
        ("parameters", f"{info['params']:,}"),
        ("weights", f"bf16 safetensors, {size_mb:.2f} MB"),
        ("tokenizer", "byte-level: id b = byte b; 256 `<|endoftext|>` (eos), 257 `<|pad|>`, "
         "258-263 reserved; vocab 264"),
        ("context", f"{cfg['max_position_embeddings']} tokens (= bytes)"),
        ("corpus", f"CPython {c['python_version']} stdlib `Lib/*.py` without test suites: "
         f"{c['train_docs']} train files ({c['train_tokens']:,} tokens), {c['val_docs']} held-out "
         f"files ({c['val_tokens']:,} tokens); hashes in `corpus_manifest.json`"),
        ("objective", "next-byte cross-entropy" if is_target else "KL(target || draft) + CE"),
        ("training", f"{a['steps']:,} AdamW steps x batch {a['batch_size']} x {a['seq_len']} = "
         f"{info['tokens_seen']:,} tokens ({epochs:.1f} epochs); lr {a['lr']} (warmup "
         f"{a['warmup']}, cosine to {a['min_lr_ratio']}x), weight decay {a['weight_decay']}, "
         f"seed {a['seed']}" + (f"; weights of step {info['kept_step']:,}, the best held-out "
         "check" if info["kept_step"] != a["steps"] else "")),
        ("held-out checks", _checks(info["evals"]) + f" (first {a['eval_tokens']:,} tokens)"),
        ("time", f"{info['seconds']:.0f} s on {info['device']} "
         f"({info['tokens_per_second']:,.0f} tokens/s)"),
        ("held-out loss", f"{nats:.4f} nats/byte ({nats / math.log(2):.3f} bits/byte) over "
         f"{result['eval_tokens']:,} held-out tokens"),
        ("draft/target greedy agreement",
         f"{result['agreement']:.3f} (teacher-forced, on the held-out text)"),
        ("date", info["date"]),
        ("software", ", ".join(f"{k} {v}" for k, v in info["versions"].items())),
    ]  # fmt: skip
    cmds = [f"python -m minirt.model.train corpus   # Python {c['python_version']}"]
    for i in infos.values():
        cmds.append(
            i["command"]
            + (f"   # the budget chose --steps {i['args']['steps']}" if i["time_budget"] else "")
        )
    cmds.append(result["command"])
    samples = "\n\n".join(
        f"```text\n{s['prompt']}{s['continuation']}\n```" for s in result["samples"]
    )
    return (
        "---\nlibrary_name: transformers\npipeline_tag: text-generation\n"
        "tags: [minirt, byte-level, qwen3]\n---\n\n"
        f"# minirt embedded {info['stage']}\n\n{role} Trained by `minirt/model/train.py`.\n\n"
        "| | |\n| --- | --- |\n"
        + "".join(f"| {k} | {v} |\n" for k, v in rows)
        + "\n## Reproduce\n\n```bash\n"
        + "\n".join(cmds)
        + "\n```\n\n"
        "Training on CUDA uses bf16 autocast, so a rerun matches closely but not bit for bit.\n\n"
        "## Greedy samples of the target\n\n"
        + samples
        + "\n\n"
        + USAGE.format(name=info["stage"])
        + LIMITS
    )


def _checks(evals: list[dict], most: int = 6) -> str:
    """The held-out curve in a few points (always with the last), for the card's table."""
    picked = evals[:: max(1, -(-len(evals) // most))][: most - 1] + evals[-1:]
    points = {e["step"]: e["val_nats_per_byte"] for e in picked}  # drops a repeated last
    return ", ".join(f"step {k:,}: {v:.3f}" for k, v in points.items()) + " nats/byte"
