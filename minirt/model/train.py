"""Reproducible training of the embedded target and draft models (`python -m minirt.model.train`).

Stages: `corpus` (verified stdlib bytes -> .corpus/), `target` (next-byte cross-entropy),
`draft` (distilled from the target's logits: KL + CE, so its greedy choices agree with the
target's — what speculative decoding needs), `eval` (held-out loss, agreement, model cards).
Data order depends only on --seed. The model is transformers' Qwen3ForCausalLM, so the shipped
folders are standard Hugging Face checkpoints. Notebook 01 (the embedded model) reads the cards.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from tqdm import tqdm
from transformers import Qwen3Config, Qwen3ForCausalLM

from minirt.model import corpus
from minirt.model.embedded import DRAFT_DIR, EMBEDDED_DIR, TARGET_DIR
from minirt.model.embedded.card import write_cards
from minirt.model.embedded.evaluate import agreement, autocast, evaluate, greedy_samples, load_model
from minirt.model.tokenizer import EOS_ID, PAD_ID, VOCAB_SIZE, save_byte_tokenizer

# Shapes of the shipped models. The draft is ~1/10 of the target so a speculative step is cheap.
SIZES = {
    "target": dict(hidden_size=256, num_hidden_layers=8, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=64, intermediate_size=768),
    "draft": dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=64, intermediate_size=384),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=16, intermediate_size=64),
    # A GPU-scale pair for `python -m minirt.bench spec --pair` (not shipped: ~0.9 GB of bf16):
    # Qwen3-0.6B's body (28 layers of 1024), big enough that a decode step on an H100 reads
    # weights for longer than Python takes to launch it, and a draft ~1/100 of its size.
    "gpu-target": dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, intermediate_size=3072),
    "gpu-draft": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=64, intermediate_size=768),
}  # fmt: skip


def make_config(size: str, max_position_embeddings: int = 1024) -> Qwen3Config:
    """A Qwen3 config for one of SIZES with the byte tokenizer's vocabulary and specials."""
    return Qwen3Config(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,  # the 264x256 embedding doubles as the LM head: fewer bytes
        use_sliding_window=False,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        **SIZES[size],
    )


def count_params(model: torch.nn.Module) -> int:
    """Parameters counted once each (the tied embedding/LM head is one tensor)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@dataclass
class TrainArgs:
    steps: int = 1000
    batch_size: int = 64
    seq_len: int = 1024
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    # Draft only: loss = kl_weight * KL(target || draft) + (1 - kl_weight) * CE.
    kl_weight: float = 0.9
    eval_every: int = 200
    eval_tokens: int = 65536


def lr_at(step: int, a: TrainArgs) -> float:
    """Linear warmup, then cosine decay from lr to lr * min_lr_ratio at the last step."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    t = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.lr * (a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def sample_batch(data: torch.Tensor, a: TrainArgs, gen: torch.Generator):
    # Offsets come from a CPU generator seeded once, so the data order is the same on any device.
    offsets = torch.randint(0, data.numel() - a.seq_len - 1, (a.batch_size,), generator=gen)
    idx = offsets.to(data.device)[:, None] + torch.arange(a.seq_len + 1, device=data.device)
    window = data[idx]  # [batch, seq_len + 1]
    return window[:, :-1], window[:, 1:]


def step_loss(model, x, y, teacher=None, kl_weight: float = 0.0) -> torch.Tensor:
    logits = model(input_ids=x, use_cache=False).logits.float()  # [batch, seq, vocab]
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    if teacher is None:
        return ce
    with torch.no_grad():
        t_logp = F.log_softmax(teacher(input_ids=x, use_cache=False).logits.float(), -1)
    s_logp = F.log_softmax(logits, -1)
    kl = F.kl_div(
        s_logp.flatten(0, 1), t_logp.flatten(0, 1), log_target=True, reduction="batchmean"
    )
    return kl_weight * kl + (1 - kl_weight) * ce


def make_optimizer(model: torch.nn.Module, a: TrainArgs, device: torch.device):
    # Decay matrices only; norm gains stay at their scale (the usual GPT recipe).
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": a.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train(model, data, val, a: TrainArgs, device, teacher=None, show: bool = True) -> dict:
    """Run `a.steps` AdamW steps; returns losses, held-out checks and throughput.

    If a held-out check ever beats the last one, the weights of the best check are kept: a
    cheap guard against over-fitting a 10 MB corpus after many epochs (usually the last wins).
    """
    gen = torch.Generator().manual_seed(a.seed)
    opt = make_optimizer(model, a, device)
    model.train()
    history, evals, best, t0, step_s = [], [], None, time.perf_counter(), None
    bar = tqdm(range(a.steps), disable=not show, mininterval=1 if sys.stderr.isatty() else 15)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a)
        x, y = sample_batch(data, a, gen)
        with autocast(device):
            loss = step_loss(model, x, y, teacher, a.kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(loss.item())  # .item() syncs; at these sizes it costs little
        bar.set_postfix(loss=f"{history[-1]:.3f}", refresh=False)
        if step == 9:  # time steps 10..29: the first ones pay for warm-up
            sync(device)
            t_probe = time.perf_counter()
        elif step == 29:
            sync(device)
            step_s = (time.perf_counter() - t_probe) / 20
            tps = a.batch_size * a.seq_len / step_s
            print(f"[throughput] {tps:,.0f} tokens/s ({step_s * 1e3:.1f} ms/step)", flush=True)
        if a.eval_every and ((step + 1) % a.eval_every == 0 or step + 1 == a.steps):
            nats = evaluate(model, val, a.seq_len, a.eval_tokens, device)
            evals.append({"step": step + 1, "train_loss": history[-1], "val_nats_per_byte": nats})
            print(f"[eval] step {step + 1}: train {history[-1]:.4f} val {nats:.4f}", flush=True)
            if nats <= min(e["val_nats_per_byte"] for e in evals):
                best = (step + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
            model.train()
    if best is not None and best[0] != a.steps:
        print(f"[best] keeping the weights of step {best[0]}", flush=True)
        model.load_state_dict(best[1])
    sync(device)
    seconds = time.perf_counter() - t0
    tokens = a.steps * a.batch_size * a.seq_len
    return {"history": history, "evals": evals, "seconds": seconds, "tokens_seen": tokens,
            "tokens_per_second": tokens / seconds, "steady_step_s": step_s,
            "kept_step": best[0] if best else a.steps}  # fmt: skip


def save_model(model, folder: Path, info: dict) -> None:
    """Save as a Hugging Face folder: bf16 safetensors, config, tokenizer files, training.json."""
    folder.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(folder)  # halves the bytes; the model stays bf16
    save_byte_tokenizer(folder, model.config.max_position_embeddings)
    (folder / "training.json").write_text(json.dumps(info, indent=1) + "\n")


def pick_device(name: str) -> torch.device:
    return torch.device(
        "cuda" if name == "auto" and torch.cuda.is_available() else name.replace("auto", "cpu")
    )


def run_training(opts: argparse.Namespace, teacher_dir: Path | None = None) -> dict:
    """The `target` and `draft` stages: build, train, save; returns what training.json records."""
    device = pick_device(opts.device)
    a = TrainArgs(**{k: getattr(opts, k) for k in asdict(TrainArgs()) if hasattr(opts, k)})
    data = torch.from_numpy(corpus.load_split(opts.corpus, "train").astype("int64")).to(device)
    val = torch.from_numpy(corpus.load_split(opts.corpus, "val").astype("int64")).to(device)
    config = make_config(opts.size, max_position_embeddings=opts.max_len or a.seq_len)
    if a.seq_len > config.max_position_embeddings:
        raise ValueError(
            f"--seq-len {a.seq_len} exceeds max_position_embeddings "
            f"{config.max_position_embeddings}; lower --seq-len or raise --max-len"
        )
    teacher = None
    if teacher_dir is not None:
        teacher = load_model(teacher_dir, device).eval().requires_grad_(False)
    if opts.time_budget:
        a.steps = steps_for_budget(config, data, val, a, device, teacher, opts.time_budget)
    torch.manual_seed(a.seed)
    model = Qwen3ForCausalLM._from_config(config, attn_implementation="sdpa").to(device)
    print(f"[{opts.stage}] {opts.size}: {count_params(model):,} parameters on {device}", flush=True)
    result = train(model, data, val, a, device, teacher)
    info = {
        "stage": opts.stage, "size": opts.size, "params": count_params(model), "args": asdict(a),
        "teacher": teacher_dir.name if teacher_dir else None, "device": device_name(device),
        "time_budget": opts.time_budget, "command": command_line(opts),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": sys.version.split()[0]},
        "corpus": json.loads((Path(opts.corpus) / "meta.json").read_text()),
        **{k: v for k, v in result.items() if k != "history"},
        "first_loss": result["history"][0], "last_loss": result["history"][-1],
    }  # fmt: skip
    save_model(model, Path(opts.out), info)
    return {**info, "history": result["history"]}


def steps_for_budget(config, data, val, a: TrainArgs, device, teacher, budget: float) -> int:
    """Steps that fit `budget` seconds, timed on a throwaway model (the real run starts fresh)."""
    probe = Qwen3ForCausalLM._from_config(config, attn_implementation="sdpa").to(device)
    probe_args = TrainArgs(**{**asdict(a), "steps": 30, "eval_every": 0, "seed": a.seed + 1})
    step_s = train(probe, data, val, probe_args, device, teacher, show=False)["steady_step_s"]
    steps = max(1, int(budget / step_s * 0.97))  # ~3% for the periodic held-out checks
    print(f"[budget] {step_s * 1e3:.1f} ms/step -> {steps} steps in {budget:.0f} s", flush=True)
    return steps


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def command_line(opts: argparse.Namespace) -> str:
    return "python -m minirt.model.train " + " ".join(opts.argv)


def run_eval(opts: argparse.Namespace) -> dict:
    """The `eval` stage: held-out loss of both, agreement, samples -> eval.json and the cards."""
    target_dir, draft_dir = Path(opts.target), Path(opts.draft)
    if opts.cards_only:  # re-render the cards from the saved measurements (no model is run)
        result = json.loads((target_dir / "eval.json").read_text())
        write_cards(target_dir, draft_dir, result)
        return result
    device = pick_device(opts.device)
    val = torch.from_numpy(corpus.load_split(opts.corpus, "val").astype("int64")).to(device)
    target, draft = load_model(target_dir, device), load_model(draft_dir, device)
    seq_len = target.config.max_position_embeddings
    result = {
        "target_val_nats_per_byte": evaluate(target, val, seq_len, opts.eval_tokens, device),
        "draft_val_nats_per_byte": evaluate(draft, val, seq_len, opts.eval_tokens, device),
        "agreement": agreement(draft, target, val, seq_len, opts.eval_tokens, device),
        "eval_tokens": min(val.numel() - 1, opts.eval_tokens) // seq_len * seq_len,
        "samples": greedy_samples(target, device, opts.sample_tokens),
        "device": device_name(device),
        "command": command_line(opts),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1), flush=True)
    for folder in (target_dir, draft_dir):
        (folder / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    write_cards(target_dir, draft_dir, result)
    return result


STAGE_HELP = {
    "target": "train the target (next-byte cross-entropy)",
    "draft": "distil the draft from the target (KL + CE)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser("python -m minirt.model.train", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    c = sub.add_parser("corpus", help="verify the stdlib against the manifest, write .corpus/")
    c.add_argument("--write-manifest", action="store_true", help="first (re)make the manifest")
    for name in ("target", "draft"):
        s = sub.add_parser(name, help=STAGE_HELP[name])
        s.add_argument("--size", default=name, choices=SIZES)
        s.add_argument("--out", default=str(EMBEDDED_DIR / name))
        s.add_argument("--max-len", type=int, help="max_position_embeddings (default: seq-len)")
        for field, default in asdict(TrainArgs()).items():
            s.add_argument("--" + field.replace("_", "-"), type=type(default), default=default)
        s.add_argument("--time-budget", type=float, help="seconds; sets --steps from a probe")
        if name == "draft":
            s.add_argument("--teacher", default=str(TARGET_DIR))
    e = sub.add_parser("eval", help="held-out loss, agreement, samples; write README.md cards")
    e.add_argument("--target", default=str(TARGET_DIR))
    e.add_argument("--draft", default=str(DRAFT_DIR))
    e.add_argument("--eval-tokens", type=int, default=1 << 20)
    e.add_argument("--sample-tokens", type=int, default=160)
    e.add_argument("--cards-only", action="store_true", help="re-render cards from eval.json")
    for s in sub.choices.values():
        s.add_argument("--corpus", default=".corpus", help="folder of train.bin and val.bin")
        s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    opts = parse_args(argv)
    opts.argv = sys.argv[1:] if argv is None else list(argv)  # recorded in the model cards
    if opts.stage == "corpus":
        if opts.write_manifest:
            m = corpus.write_manifest()
            print(f"wrote {corpus.MANIFEST_PATH}: {m['num_files']} files, {m['total_bytes']:,} B")
        info = corpus.build_corpus(Path(opts.corpus))
        print(json.dumps(info, indent=1))
        return info
    if opts.stage == "eval":
        return run_eval(opts)
    return run_training(opts, Path(opts.teacher) if opts.stage == "draft" else None)


if __name__ == "__main__":
    main()
