"""Command line: `python -m minirt.bench <topic> [--out DIR] ...`.

Each topic is one module of `minirt.bench` with `add_parser(subparsers)` (its subcommand, flags and
help) and `main(args, command)` (run it; return the file it wrote, or None when it only printed).
This file lists them in TOPICS, refuses a GPU topic on a machine without what it needs, and
dispatches. A new benchmark is one module and one line here.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from minirt.bench import (
    bank,
    cpu,
    gpu,
    kernels,
    moe,
    ncu,
    plots,
    quant,
    roofline,
    sched,
    serve_run,
    smem_gemm,
    spec,
    timeline,
    transfers,
)

# topic -> its module, in the order `--help` lists them
TOPICS = {
    "cpu": cpu,
    "roofline": roofline,
    "gpu": gpu,
    "kernels": kernels,
    "plot": plots,
    "ncu": ncu,
    "timeline": timeline,
    "bank": bank,
    "smem-gemm": smem_gemm,
    "transfers": transfers,
    "spec": spec,
    "quant": quant,
    "moe": moe,
    "sched": sched,
    "serve": serve_run,
}

# What each GPU topic needs, and what a learner without it can use instead.
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "roofline": (("cuda",), ""),
    "gpu": (("cuda",), ""),
    "kernels": (("cuda",), ""),
    "ncu": (("cuda", "ncu"), ""),
    "timeline": (("cuda",), "without a GPU, notebook 05 traces a step of the embedded model"),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minirt.bench",
        description="Run a minirt benchmark and write its results as JSON.",
    )
    subparsers = parser.add_subparsers(dest="topic", required=True, metavar="TOPIC")
    for module in TOPICS.values():
        module.add_parser(subparsers)
    return parser


def missing(needs: tuple[str, ...]) -> list[str]:
    """The requirements this machine lacks, in words."""
    import importlib.util
    import shutil

    import torch

    have = {
        "cuda": ("a CUDA GPU", torch.cuda.is_available),
        "ncu": ("Nsight Compute's `ncu` on PATH", lambda: shutil.which("ncu")),
        "cupy": ("CuPy", lambda: importlib.util.find_spec("cupy")),
    }
    return [have[n][0] for n in needs if not have[n][1]()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "-m", "minirt.bench", *argv])
    needs, instead = NEEDS.get(args.topic, ((), ""))
    lacking = missing(needs)
    if lacking:
        what = " and ".join([", ".join(lacking[:-1]), lacking[-1]] if len(lacking) > 1 else lacking)
        hint = f"; {instead}" if instead else ""
        print(f"error: the {args.topic} benchmark needs {what}{hint}", file=sys.stderr)
        return 2
    path = TOPICS[args.topic].main(args, command)
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
