"""Command line: `python -m minirt.bench cpu [--out DIR] ...` (more topics join as subcommands)."""

from __future__ import annotations

import argparse
import shlex
import sys

from minirt.results import DEFAULT_OUT, load_results


def _int_list(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1,32, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minirt.bench",
        description="Run a minirt benchmark and write its results as JSON.",
    )
    topics = parser.add_subparsers(dest="topic", required=True, metavar="TOPIC")
    cpu = topics.add_parser(
        "cpu",
        help="decode tokens/s at batch 1 vs 32 and the prefix-cache hit rate, on CPU",
        description="Decode tokens/s at two batch sizes (and their ratio) and the prefix-cache "
        "hit rate on a shared-prefix workload, with the embedded model on CPU. Writes "
        "OUT/cpu/engine-<date>.json.",
    )
    cpu.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"results folder (default: {DEFAULT_OUT})"
    )
    cpu.add_argument(
        "--batch-sizes", type=_int_list, default=(1, 32), help="comma-separated (default: 1,32)"
    )
    cpu.add_argument(
        "--max-tokens", type=int, default=64, help="decode tokens per sequence (default: 64)"
    )
    cpu.add_argument(
        "--prefix-prompts", type=int, default=16, help="prompts sharing the prefix (default: 16)"
    )
    cpu.add_argument(
        "--model", default=None, help="a Hugging Face checkpoint folder (default: embedded)"
    )
    cpu.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    cpu.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    roof = topics.add_parser(
        "roofline",
        help="(CUDA) HBM copy GB/s, bf16 matmul TFLOP/s and eager decode step times",
    )
    roof.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    gpu = topics.add_parser(
        "gpu",
        help="(CUDA) minirt vs transformers: decode, offline throughput, kernels, roofline",
        description="Decode tokens/s at batch 1-256 (minirt with and without CUDA graphs, "
        "transformers eager and compiled), offline throughput on 256 random requests, the "
        "attention kernels against the copy bandwidth and SDPA flash, and a roofline table, on "
        "a Qwen3-0.6B-shaped model with random weights. Writes OUT/<gpu>/gpu-<date>.json.",
    )
    gpu.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    gpu.add_argument(
        "--hf-compile-only",
        action="store_true",
        help="only transformers static cache + torch.compile decode (OUT/<gpu>/hf-compile-*.json)",
    )
    kern = topics.add_parser(
        "kernels",
        help="(CUDA) the attention kernels alone: decode GB/s vs copy, prefill vs SDPA flash",
        description="The part (c) of the gpu benchmark on its own, with every launch "
        "configuration tried. --once runs one launch per kernel and writes nothing (a target "
        "for Nsight Compute: ncu --kernel-name regex:decode python -m minirt.bench kernels "
        "--once decode).",
    )
    kern.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    kern.add_argument("--once", choices=["decode", "prefill", "both"], default=None)
    plot = topics.add_parser("plot", help="draw a gpu result JSON as a PNG beside it")
    plot.add_argument("file", help="a bench/results/<device>/gpu-*.json file")
    ncu = topics.add_parser(
        "ncu",
        help="(CUDA + Nsight Compute) ncu metrics of one decode and one prefill attention launch",
    )
    ncu.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    bank = topics.add_parser(
        "bank",
        help="(CUDA + CuPy + Nsight Compute) shared-memory bank conflicts of each access pattern",
        description="One tiny kernel per pattern of minirt.tools.bank.PATTERNS (one warp, one "
        "shared-memory instruction), all profiled by one ncu process; ncu's wavefronts and bank "
        "conflicts beside the simulator's. Writes OUT/<gpu>/bank-<date>.json.",
    )
    bank.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    gemm = topics.add_parser(
        "smem-gemm",
        help="(CUDA + CuPy; ncu, compute-sanitizer) fp32 GEMM from naive to register-blocked",
        description="Each step of minirt.bench.smem_gemm (naive, shared-memory tiles, the "
        "transposed tile with and without bank conflicts, swizzled, register-blocked, templated) "
        "timed against cuBLAS SGEMM at SIZE^3 and checked against it; bank conflicts per kernel "
        "under one ncu process and racecheck of the tiled kernel with and without its second "
        "barrier, where those tools exist. Writes OUT/<gpu>/smem-gemm-<date>.json.",
    )
    gemm.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    gemm.add_argument("--size", type=int, default=4096, help="M = N = K (default: 4096)")
    transfers = topics.add_parser(
        "transfers",
        help="(CUDA) pinned vs pageable copies, non_blocking, two streams, stale reads, KV swap",
        description="Every minirt.transfer experiment (copy bandwidth 4 KiB-1 GiB both ways, "
        "pinned and pageable; CPU hold time of non_blocking; copy-compute overlap on one and two "
        "streams; the stale-read and stream-order bugs and their fixes) and KV swap throughput. "
        "Writes OUT/<gpu>/transfers-<date>.json and the timelines as transfers-trace-<date>.json.",
    )
    transfers.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    transfers.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    spec = topics.add_parser(
        "spec",
        help="(CUDA) speculative decoding: verify cost curves, tokens/s with and without",
        description="The cost of one forward over batch x tokens (1-256 x 1-9) for the "
        "Qwen3-0.6B-shaped target and the embedded pair, and end-to-end greedy tokens/s of the "
        "embedded pair with k = 0, 2, 4, 6 draft tokens. Writes OUT/<gpu>/spec-<date>.json.",
    )
    spec.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    spec.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    spec.add_argument(
        "--pair", nargs=2, metavar=("TARGET", "DRAFT"),
        help="instead: a trained target and draft folder (python -m minirt.model.train target "
        "--size gpu-target, draft --size gpu-draft): their curves and tokens/s as pair 'gpu'",
    )  # fmt: skip
    spec.add_argument("--decode-only", action="store_true",
                      help="with --pair: only the full-batch decode workload")  # fmt: skip
    quant = topics.add_parser(
        "quant",
        help="(CUDA) quantized GEMMs (W4A16, FP8, INT8) vs cuBLAS, and decode tokens/s",
        description="GEMM time of the Qwen3-0.6B and Llama-3-8B linear shapes at M = 1..4096: "
        "cuBLAS bf16, torch._scaled_mm fp8, torch._int_mm, and minirt's Triton W4A16 / FP8 / "
        "INT8 kernels; decode tokens/s with each method. Writes OUT/<gpu>/quant-<date>.json.",
    )
    quant.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    quant.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    quant.add_argument("--methods", nargs="+", help="only these GEMMs beside bf16 (no decode)")
    moe = topics.add_parser(
        "moe",
        help="MoE all-to-all vs message size (gloo on CPU; NCCL) and grouped expert GEMMs (CUDA)",
        description="Without a GPU (or with --cpu): gloo all_to_all_single between 2 and 4 local "
        "processes against message size, and the phases of the expert-parallel MoE block; "
        "writes OUT/cpu/moe-<date>.json. With CUDA: Qwen3-30B-A3B expert GEMMs (Triton grouped "
        "GEMM, per-expert loop, torch._grouped_mm, reference) for 16-4096 tokens, and NCCL "
        "all-to-all when there are >= 2 GPUs; writes OUT/<gpu>/moe-<date>.json.",
    )
    moe.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    moe.add_argument("--cpu", action="store_true", help="the CPU part even when CUDA is present")
    moe.add_argument(
        "--worlds", type=_int_list, default=(2, 4), help="process counts (default: 2,4)"
    )
    moe.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sched = topics.add_parser(
        "sched",
        help="vLLM-like vs SGLang-like scheduling (prefix caches, policies, overlap) by workload",
        description="Each preset (FCFS without a cache, vllm, sglang, and free combinations) on "
        "few-shot, multi-turn, branching and no-sharing workloads: throughput, TTFT/TPOT p50/p99, "
        "hit rate vs the offline optimum, CPU/device time split. CPU: the embedded model, "
        "OUT/cpu/sched-<date>.json; CUDA: Qwen3-0.6B shape, OUT/<gpu>/sched-<date>.json.",
    )
    sched.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    sched.add_argument("--cpu", action="store_true", help="the CPU run even when CUDA is present")
    sched.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_serve(topics)
    return parser


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 1,2,4,inf, got {text!r}") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"rates must be > 0 requests/s, got {text!r}")
    return rates


def _add_serve(topics) -> None:
    serve = topics.add_parser(
        "serve",
        help="open-loop load on an OpenAI-compatible server: TTFT/TPOT/ITL, goodput per rate",
        description="Streamed completions at Poisson or gamma arrivals for each offered rate; "
        "TTFT, TPOT, ITL and latency p50/p90/p99, throughput and goodput under the SLO. Against "
        "--url (any OpenAI-compatible server) or a minirt server --launch starts (then offline "
        "LLM.generate on the same requests too). Writes OUT/<device>/serve-<date>.json and .png.",
    )
    where = serve.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    where.add_argument(
        "--launch",
        metavar="MODEL",
        help="start minirt serve: embedded, qwen3-0.6b-shape or a folder",
    )
    serve.add_argument(
        "--rates",
        type=_rates,
        default=[2.0, 4.0, 8.0, 16.0, float("inf")],
        help="requests/s, comma-separated; inf = all at once",
    )
    serve.add_argument("--num-prompts", type=int, default=32, help="requests per rate")
    serve.add_argument("--burstiness", type=float, default=1.0, help="gamma shape; 1 = Poisson")
    serve.add_argument(
        "--distribution",
        default="sharegpt-small",
        help="sharegpt, sharegpt-small or fixed (--input-len, --output-len)",
    )
    serve.add_argument("--input-len", type=int, default=64)
    serve.add_argument("--output-len", type=int, default=32)
    serve.add_argument("--workload", help="JSONL of {prompt_len, output_len} per request")
    serve.add_argument("--shared-prefix", type=int, default=0, help="tokens shared by prompts")
    serve.add_argument("--num-prefixes", type=int, default=1)
    serve.add_argument("--slo-ttft-ms", type=float, default=500.0)
    serve.add_argument("--slo-tpot-ms", type=float, default=50.0)
    serve.add_argument("--model", help="model name to send (default: the server's first)")
    serve.add_argument("--device", default="auto", help="with --launch: cpu, cuda or auto")
    serve.add_argument("--threads", type=int, default=None, help="with --launch: torch threads")
    serve.add_argument("--label", help="results folder name (default: cpu/h100/..., or remote)")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    serve.add_argument("--no-progress", action="store_true", help="hide the per-rate lines")


def _run_serve(args, command: str, progress: bool):
    from minirt.bench import serve_run
    from minirt.bench.serve import LoadConfig
    from minirt.bench.serve_workload import WorkloadSpec
    from minirt.tools.slo import Slo

    workload = WorkloadSpec(
        distribution=args.distribution,
        prompt_len=args.input_len,
        output_len=args.output_len,
        file=args.workload,
        shared_prefix_len=args.shared_prefix,
        num_prefixes=args.num_prefixes,
        seed=args.seed,
    )
    cfg = LoadConfig(
        url=args.url or "",
        rates=args.rates,
        num_prompts=args.num_prompts,
        burstiness=args.burstiness,
        workload=workload,
        model=args.model,
        slo=Slo(args.slo_ttft_ms, args.slo_tpot_ms),
    )
    path = serve_run.run(
        cfg, args.launch, args.device, args.threads, args.out, command, args.label, progress
    )
    serve_run.print_summary(path)
    return path


# What each GPU topic needs, and what a learner without it can use instead.
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "roofline": (("cuda",), ""),
    "gpu": (("cuda",), ""),
    "kernels": (("cuda",), ""),
    "ncu": (("cuda", "ncu"), ""),
    "bank": (
        ("cuda", "ncu", "cupy"),
        "without a GPU, minirt.tools.bank.simulate gives the counts from the rules",
    ),
    "smem-gemm": (
        ("cuda", "cupy"),
        "its kernels are CUDA C that CuPy compiles (NVRTC) at run time",
    ),
    "transfers": (("cuda",), "without a GPU, minirt.tools.streams simulates the same experiments"),
    "spec": (
        ("cuda",),
        "without a GPU, minirt.tools.spec models the same curves from the roofline",
    ),
    "quant": (
        ("cuda",),
        "without a GPU the kernels run in Triton's interpreter: pytest tests/kernels",
    ),
}


def missing(needs: tuple[str, ...]) -> list[str]:
    """The requirements this machine lacks, in words."""
    import importlib.util
    import shutil

    import torch

    have = {"cuda": ("a CUDA GPU", torch.cuda.is_available),
            "ncu": ("Nsight Compute's `ncu` on PATH", lambda: shutil.which("ncu")),
            "cupy": ("CuPy", lambda: importlib.util.find_spec("cupy"))}  # fmt: skip
    return [have[n][0] for n in needs if not have[n][1]()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "-m", "minirt.bench", *argv])
    progress = not getattr(args, "no_progress", False)
    needs, instead = NEEDS.get(args.topic, ((), ""))
    lacking = missing(needs)
    if lacking:
        what = " and ".join([", ".join(lacking[:-1]), lacking[-1]] if len(lacking) > 1 else lacking)
        hint = f"; {instead}" if instead else ""
        print(f"error: the {args.topic} benchmark needs {what}{hint}", file=sys.stderr)
        return 2
    path = _run(args, command, progress)
    if path is not None:
        print(f"wrote {path}")
    return 0


def _run(args, command: str, progress: bool):
    """Run one topic; return the file it wrote (None: it printed what it had to say)."""
    import torch

    if args.topic == "cpu":
        from minirt.bench import cpu

        if args.threads:
            torch.set_num_threads(args.threads)
        cfg = cpu.CpuBenchConfig(batch_sizes=args.batch_sizes, max_tokens=args.max_tokens,
                                 prefix_prompts=args.prefix_prompts, model=args.model)  # fmt: skip
        path = cpu.run(cfg, out_dir=args.out, command=command, progress=progress)
        print(cpu.summary(load_results(path)["results"]))
        return path
    if args.topic == "serve":
        return _run_serve(args, command, progress)
    if args.topic == "plot":
        from minirt.bench.plots import write_plot

        return write_plot(args.file)
    if args.topic == "ncu":
        from minirt.bench import gpu, ncu
        from minirt.results import write_results

        rows = ncu.measure()
        config = {"gpu": torch.cuda.get_device_name(), "ncu": ncu.ncu_version(),
                  "shapes": "decode: 64 x 4096 tokens; prefill: 4 x 4096 causal; bf16"}  # fmt: skip
        return write_results("ncu", gpu._device(), rows, args.out, command, config=config)
    if args.topic == "bank":
        from minirt.bench import bank

        path = bank.run(args.out, command)
        print(bank.summary(load_results(path)["results"]))
        return path
    if args.topic == "smem-gemm":
        from minirt.bench import smem_gemm

        path = smem_gemm.run(args.out, command, size=args.size)
        record = load_results(path)
        print(smem_gemm.summary(record["results"]))
        for note in record["config"]["notes"]:
            print(f"note: {note}")
        return path
    if args.topic == "transfers":
        from minirt.bench import transfers

        path = transfers.run(args.out, command, progress=progress)
        print(transfers.summary(load_results(path)["results"]))
        return path
    if args.topic == "spec":
        from minirt.bench import spec

        if args.pair:
            path = spec.run_pair(*args.pair, args.out, command, progress=progress,
                                 decode_only=args.decode_only)  # fmt: skip
        else:
            path = spec.run(args.out, command, progress=progress)
        print(spec.summary(load_results(path)["results"]))
        return path
    if args.topic == "quant":
        from minirt.bench import quant

        methods = set(args.methods) if args.methods else None
        path = quant.run(args.out, command, progress=progress, methods=methods)
        print(quant.summary(load_results(path)["results"]))
        return path
    if args.topic in ("sched", "moe"):  # CPU runs unless a GPU is there (and --cpu not given)
        from minirt.bench import moe, sched

        cpu_only = args.cpu or not torch.cuda.is_available()
        if args.topic == "sched":
            run = sched.run_cpu if cpu_only else sched.run_cuda
            path = run(args.out, command, progress=progress)
            print(sched.summary(load_results(path)["results"]))
        else:
            path = (moe.run_cpu(args.out, command, worlds=args.worlds) if cpu_only
                    else moe.run_cuda(args.out, command, progress=progress))  # fmt: skip
            print(moe.summary(load_results(path)["results"]))
        return path
    from minirt.bench import gpu, roofline  # roofline, gpu, kernels

    if args.topic == "kernels" and args.once:
        from minirt.bench import kernels

        kernels.run_once(args.once)
        return None
    if args.topic == "roofline":
        path = roofline.run(args.out, command)
        for row in load_results(path)["results"]:
            print(row)
    elif args.topic == "kernels":
        path = gpu.run_kernels(args.out, command)
        print(gpu.summary(load_results(path)["results"]))
    elif args.hf_compile_only:
        path = gpu.run_hf_compile(args.out, command)
        for row in load_results(path)["results"]:
            print(row)
    else:
        path = gpu.run(args.out, command)
        print(gpu.summary(load_results(path)["results"]))
    return path


if __name__ == "__main__":
    sys.exit(main())
