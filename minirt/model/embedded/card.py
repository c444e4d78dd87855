"""Model cards (README.md) of the embedded models: every number comes from `training.json` (the
training run) or the eval stage of `python -m minirt.model.train`, none is typed in by hand.
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
    for folder, info in infos.items():
        (folder / "README.md").write_text(card_text(folder, info, infos, result))


def card_text(folder: Path, info: dict, infos: dict, result: dict) -> str:
    """The card of `folder`; `infos`: the training.json of the target and the draft, in order."""
    cfg = json.loads((folder / "config.json").read_text())
    target, draft = infos.values()
    ratio, nats = target["params"] / draft["params"], result[f"{info['stage']}_val_nats_per_byte"]
    kl = info["args"].get("kl_weight")  # the draft's distillation weight
    role = (
        f"The target model of minirt's embedded pair; its draft is {ratio:.1f}x smaller."
        if info["stage"] == "target"
        else f"The draft model of minirt's embedded pair, {ratio:.1f}x smaller than the target, "
        f"distilled from the target's logits (loss = {kl} KL + {1 - kl:.2g} CE)."
    )
    rows = _model_rows(folder, info, cfg) + _training_rows(info, nats, result)
    table = "| | |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    commands = _commands(info["corpus"]["python_version"], infos, result)
    samples = "\n\n".join(
        f"```text\n{s['prompt']}{s['continuation']}\n```" for s in result["samples"]
    )
    return (
        "---\nlibrary_name: transformers\npipeline_tag: text-generation\n"
        "tags: [minirt, byte-level, qwen3]\n---\n\n"
        f"# minirt embedded {info['stage']}\n\n"
        f"{role} Trained by `minirt/model/train.py`.\n\n"
        + table
        + "\n## Reproduce\n\n```bash\n"
        + "\n".join(commands)
        + "\n```\n\n"
        "Training on CUDA uses bf16 autocast, so a rerun matches closely but not bit for bit.\n\n"
        "## Greedy samples of the target\n\n"
        + samples
        + "\n\n"
        + USAGE.format(name=info["stage"])
        + LIMITS
    )


def _model_rows(folder: Path, info: dict, cfg: dict) -> list[tuple[str, str]]:
    """What the model is: architecture, size, tokenizer, context."""
    architecture = (
        f"Qwen3 (`Qwen3ForCausalLM`): hidden {cfg['hidden_size']}, "
        f"{cfg['num_hidden_layers']} layers, {cfg['num_attention_heads']} query / "
        f"{cfg['num_key_value_heads']} KV heads of dim {cfg['head_dim']}, SwiGLU "
        f"{cfg['intermediate_size']}, RoPE, q/k-norm, tied embeddings"
    )
    size_mb = (folder / "model.safetensors").stat().st_size / 1e6
    tokenizer = (
        "byte-level: id b = byte b; 256 `<|endoftext|>` (eos), 257 `<|pad|>`, "
        "258-263 reserved; vocab 264"
    )
    return [
        ("architecture", architecture),
        ("parameters", f"{info['params']:,}"),
        ("weights", f"bf16 safetensors, {size_mb:.2f} MB"),
        ("tokenizer", tokenizer),
        ("context", f"{cfg['max_position_embeddings']} tokens (= bytes)"),
    ]


def _training_rows(info: dict, nats: float, result: dict) -> list[tuple[str, str]]:
    """How it was trained and what the held-out checks measured."""
    a, c = info["args"], info["corpus"]
    corpus = (
        f"CPython {c['python_version']} stdlib `Lib/*.py` without test suites: "
        f"{c['train_docs']} train files ({c['train_tokens']:,} tokens), {c['val_docs']} held-out "
        f"files ({c['val_tokens']:,} tokens); hashes in `corpus_manifest.json`"
    )
    objective = (
        "next-byte cross-entropy" if info["stage"] == "target" else "KL(target || draft) + CE"
    )
    epochs = info["tokens_seen"] / max(1, c["train_tokens"])
    training = (
        f"{a['steps']:,} AdamW steps x batch {a['batch_size']} x {a['seq_len']} = "
        f"{info['tokens_seen']:,} tokens ({epochs:.1f} epochs); lr {a['lr']} (warmup "
        f"{a['warmup']}, cosine to {a['min_lr_ratio']}x), weight decay {a['weight_decay']}, "
        f"seed {a['seed']}"
    )
    if info["kept_step"] != a["steps"]:
        training += f"; weights of step {info['kept_step']:,}, the best held-out check"
    speed = f"{info['tokens_per_second']:,.0f} tokens/s"
    agreement = f"{result['agreement']:.3f} (teacher-forced, on the held-out text)"
    loss = (
        f"{nats:.4f} nats/byte ({nats / math.log(2):.3f} bits/byte) over "
        f"{result['eval_tokens']:,} held-out tokens"
    )
    return [
        ("corpus", corpus),
        ("objective", objective),
        ("training", training),
        ("held-out checks", _checks(info["evals"]) + f" (first {a['eval_tokens']:,} tokens)"),
        ("time", f"{info['seconds']:.0f} s on {info['device']} ({speed})"),
        ("held-out loss", loss),
        ("draft/target greedy agreement", agreement),
        ("date", info["date"]),
        ("software", ", ".join(f"{k} {v}" for k, v in info["versions"].items())),
    ]


def _commands(python_version: str, infos: dict, result: dict) -> list[str]:
    """The command lines that rebuild the corpus, both models and the cards, in order."""
    commands = [f"python -m minirt.model.train corpus   # Python {python_version}"]
    for i in infos.values():
        budget = f"   # the budget chose --steps {i['args']['steps']}" if i["time_budget"] else ""
        commands.append(i["command"] + budget)
    return [*commands, result["command"]]


def _checks(evals: list[dict], most: int = 6) -> str:
    """The held-out curve in a few points (always with the last), for the card's table."""
    picked = evals[:: max(1, -(-len(evals) // most))][: most - 1] + evals[-1:]
    points = {e["step"]: e["val_nats_per_byte"] for e in picked}  # drops a repeated last
    return ", ".join(f"step {k:,}: {v:.3f}" for k, v in points.items()) + " nats/byte"
