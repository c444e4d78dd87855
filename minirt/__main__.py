"""Command line: `python -m minirt {launch,demo,generate,kv-size,serve}`.

`launch` is what `./workbench` runs: the dashboard and JupyterLab. `demo` shows the embedded model
generating code and what the engine did; `kv-size` answers "how much KV cache does this model
need?" offline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GIB = 2**30
THREADS_HELP = "torch CPU threads (default: by model size, 1 for the embedded models)"


def _model_path(model: str | None, what: str = "omit --model for the embedded model"):
    """The checkpoint folder; a missing one names what a command line can pass (not None)."""
    from minirt.model.loader import resolve_model_path

    if model is not None and model not in ("target", "draft") and not Path(model).exists():
        raise FileNotFoundError(
            f"model {model!r} does not exist; pass a checkpoint folder (config.json + "
            f"*.safetensors + tokenizer.json), 'target' or 'draft', or {what}"
        )
    return resolve_model_path(model)


def _cpu_threads(args, model_path: Path) -> None:
    """On a CPU run, torch's threads: few enough that a busy machine cannot make them spin."""
    import torch

    from minirt.config import ModelConfig
    from minirt.threads import pin_cpu_threads

    if args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available()):
        pin_cpu_threads(ModelConfig.from_pretrained(model_path), args.threads)


def _progress() -> bool:
    """A progress bar only on a terminal: in a log, each redraw would be one more line."""
    return sys.stderr.isatty()


def _traced_pool_blocks(prompts: list[str], max_tokens: int, block_size: int) -> int:
    """A pool for a traced run: twice what the prompts can need, so the Block tables page draws
    the blocks that were used rather than a wall of free ones (a byte is at most one token)."""
    need = sum(-(-(len(p.encode()) + 2 + max_tokens) // block_size) for p in prompts)
    return max(32, 2 * need)


def _engine_kwargs(args) -> dict:
    kw = {"block_size": args.block_size, "device": args.device, "trace": bool(args.trace)}
    if args.kv_cache_mb is not None:
        kw["kv_cache_bytes"] = args.kv_cache_mb * 2**20  # EngineConfig checks it
    elif args.trace:
        blocks = _traced_pool_blocks(args.prompts, args.max_tokens, args.block_size)
        kw["num_kv_blocks"] = blocks
    return kw


def cmd_generate(args) -> int:
    from minirt import LLM, SamplingParams

    model_path = _model_path(args.model)
    kw = _engine_kwargs(args)  # checks block_size before it divides
    _cpu_threads(args, model_path)
    llm = LLM(model_path, **kw)
    params = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        seed=args.seed,
        stop=args.stop or [],
    )
    outs = llm.generate(args.prompts, params, use_tqdm=_progress())
    for out in outs:
        print(out.prompt + out.text)
        print(f"--- {len(out.token_ids)} tokens, finish_reason={out.finish_reason}")
    s = llm.last_stats
    print(
        f"{s.num_generated_tokens} tokens in {s.elapsed_s:.2f} s "
        f"({s.num_generated_tokens / s.elapsed_s:.1f} tok/s), {s.num_steps} steps",
        file=sys.stderr,
    )
    if args.trace:
        print(f"trace written to {llm.recorder.save(args.trace)}", file=sys.stderr)
    return 0


def cmd_kv_size(args) -> int:
    from minirt.checks import as_float, as_int
    from minirt.config import PRESETS, ModelConfig
    from minirt.kv import kv_cache_bytes_per_token, max_concurrent_sequences
    from minirt.kv.pool import dtype_bytes

    for flag in ("seq_len", "batch", "block_size"):
        as_int("--" + flag.replace("_", "-"), getattr(args, flag), 1)
    as_float("--gpu-mem-gb", args.gpu_mem_gb, 0.0)
    if args.model in PRESETS:
        config = PRESETS[args.model]
    else:
        presets = ", ".join(PRESETS)
        config = ModelConfig.from_pretrained(_model_path(args.model, f"a preset: {presets}"))
    per_token = kv_cache_bytes_per_token(config, args.dtype)
    per_seq = per_token * args.seq_len
    weights = config.num_parameters() * dtype_bytes(args.dtype)
    mem = args.gpu_mem_gb * 1e9
    fits = max_concurrent_sequences(config, mem, args.seq_len, args.dtype, weights, args.block_size)
    c = config
    print(
        f"model            {args.model} ({c.num_hidden_layers} layers, {c.num_key_value_heads} "
        f"KV heads, head_dim {c.head_dim}, {args.dtype})"
    )
    print(
        f"per token        2 x {c.num_hidden_layers} x {c.num_key_value_heads} x {c.head_dim} x "
        f"{dtype_bytes(args.dtype)} B = {per_token:,} B ({per_token / 1024:.1f} KiB)"
    )
    print(f"per sequence     {args.seq_len:,} tokens -> {per_seq / GIB:.3f} GiB")
    print(
        f"batch of {args.batch:<7} {per_seq * args.batch / GIB:.2f} GiB "
        f"({-(-args.seq_len // args.block_size) * args.batch:,} blocks of {args.block_size})"
    )
    print(
        f"weights          {config.num_parameters() / 1e9:.2f} B params -> {weights / GIB:.2f} GiB"
    )
    print(
        f"on {args.gpu_mem_gb:g} GB        at most {fits:,} sequences of {args.seq_len:,} tokens "
        "beside the weights"
    )
    return 0


def cmd_demo(args) -> int:
    from minirt import LLM, SamplingParams

    print("minirt workbench — the embedded byte-level model (CPU is fine, nothing is downloaded)\n")
    model_path = _model_path(args.model)
    _cpu_threads(args, model_path)
    llm = LLM(model_path, trace=True, device=args.device)
    header = "# utilities for working with files\nimport os\n\n"
    prompts = [header + "def read_lines(path):", header + "class Config:", "def fib(n):"]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    outs = llm.generate(prompts, params, use_tqdm=_progress())
    for out in outs:
        print("=" * 72 + f"\n{out.prompt}\033[1m{out.text}\033[0m\n")
    s = llm.last_stats
    print(
        f"{s.num_generated_tokens} tokens in {s.elapsed_s:.2f} s over {s.num_steps} steps; "
        f"prefix-cache hit rate {s.prefix_cache_hit_rate:.0%} (the prompts share a header)"
    )
    print(f"KV pool: {llm.num_blocks} blocks of {llm.config.block_size} tokens, preallocated\n")
    print("step  prefill  decode  running  free blocks")
    for ev in [e for e in llm.recorder.events if e["type"] == "step"][:8]:
        print(
            f"{ev['step']:>4}  {ev['num_prefill_tokens']:>7}  {ev['num_decode_tokens']:>6}  "
            f"{ev['num_running']:>7}  {ev['num_free_blocks']:>11}"
        )
    print(
        '…\nNext: python -m minirt generate "def fib(n):" --max-tokens 64, '
        "python -m minirt kv-size --help"
    )
    return 0


def cmd_serve(args) -> int:
    from minirt.serve.server import serve

    kw = {"block_size": args.block_size, "device": args.device, "max_num_seqs": args.max_num_seqs}
    if args.kv_cache_mb is not None:
        kw["kv_cache_bytes"] = args.kv_cache_mb * 2**20
    if args.overlap:
        kw["overlap_schedule"] = True
    return serve(args.model, args.host, args.port, args.max_waiting, args.threads, args.engine,
                 **kw)  # fmt: skip


def cmd_launch(args) -> int:
    from minirt.launch import launch

    return launch(args.dashboard_port, args.lab_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minirt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    launch = sub.add_parser(
        "launch", help="start the dashboard and JupyterLab on 127.0.0.1 (Ctrl-C stops both)"
    )
    launch.add_argument("--dashboard-port", type=int, default=None, help="default: a free port")
    launch.add_argument("--lab-port", type=int, default=None, help="default: a free port")
    launch.set_defaults(func=cmd_launch)

    demo = sub.add_parser("demo", help="generate with the embedded model and show what happened")
    demo.add_argument("--model", default=None, help="checkpoint folder (default: embedded)")
    demo.add_argument("--max-tokens", type=int, default=48)
    demo.add_argument("--device", default="auto")
    demo.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    demo.set_defaults(func=cmd_demo)

    gen = sub.add_parser("generate", help="generate a continuation of one or more prompts")
    gen.add_argument("prompts", nargs="+", help="prompt text(s)")
    gen.add_argument("--model", default=None, help="checkpoint folder, 'target' or 'draft'")
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-k", type=int, default=-1)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", help="stop string (repeatable)")
    gen.add_argument("--block-size", type=int, default=16)
    gen.add_argument("--kv-cache-mb", type=float, default=None, help="KV budget in MiB")
    gen.add_argument("--device", default="auto")
    gen.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    gen.add_argument(
        "--trace",
        default=None,
        help="write the engine trace to this JSON file (the pool is sized to the prompts unless "
        "--kv-cache-mb is given)",
    )
    gen.set_defaults(func=cmd_generate)

    kv = sub.add_parser("kv-size", help="KV-cache bytes for a model, sequence length and batch")
    kv.add_argument(
        "--model",
        default="qwen3-0.6b",
        help="preset (qwen3-0.6b, qwen3-8b, qwen3-30b-a3b, llama-3-8b, llama-3-70b), "
        "a checkpoint folder, or 'target'/'draft'",
    )
    kv.add_argument("--seq-len", type=int, default=4096)
    kv.add_argument("--batch", type=int, default=1)
    kv.add_argument(
        "--dtype",
        default="bfloat16",
        help="KV dtype: bfloat16, float16, float32, float8_e4m3fn, int8",
    )
    kv.add_argument("--block-size", type=int, default=16)
    kv.add_argument("--gpu-mem-gb", type=float, default=80.0, help="device memory (H100: 80)")
    kv.set_defaults(func=cmd_kv_size)

    srv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (/v1/completions, ...)")
    srv.add_argument("model", nargs="?", default=None, help="checkpoint folder (default: embedded)")
    srv.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--max-waiting", type=int, default=256, help="queue beyond a batch; then 429")
    srv.add_argument("--max-num-seqs", type=int, default=256, help="requests in one batch")
    srv.add_argument("--block-size", type=int, default=16)
    srv.add_argument("--kv-cache-mb", type=float, default=None, help="KV budget in MiB")
    srv.add_argument("--device", default="auto")
    srv.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    srv.add_argument("--engine", choices=["process", "thread"], default="process",
                     help="the engine in its own process (default) or a server thread")  # fmt: skip
    srv.add_argument("--overlap", action="store_true",
                     help="prepare step n + 1 while the device runs step n")  # fmt: skip
    srv.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # bad input or a missing file: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
