"""`python -m minirt.bench <topic>`: refusals on a machine without what the topic needs, and
every topic's help, flags and defaults kept as recorded."""

import os
import shlex
from pathlib import Path

import pytest
import torch

from minirt.bench.__main__ import NEEDS, build_parser, main, missing


# ids "topic-gpu", not "gpu": a bare "gpu" id would read as the gpu marker and be skipped here
@pytest.mark.parametrize("topic", sorted(NEEDS), ids=lambda t: f"topic-{t}")
def test_a_gpu_topic_without_a_gpu_exits_2_saying_what_is_missing(topic, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([topic]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the {topic} benchmark needs a CUDA GPU")
    needs, instead = NEEDS[topic]
    assert instead in err
    assert all(what in err for what in missing(needs))  # everything it lacks is named


# Every topic's `--help` and its parsed defaults, recorded from the CLI as it stood; a refactor of
# the parser must leave them unchanged (regenerate the file only for a deliberate change:
# MINIRT_WRITE_BENCH_HELP=1 pytest tests/bench/test_bench_cli.py).
HELP_FILE = Path(__file__).with_name("bench_help.txt")
TOPIC_ARGS = {
    "": [],
    "cpu": ["cpu"],
    "roofline": ["roofline"],
    "gpu": ["gpu"],
    "kernels": ["kernels"],
    "plot": ["plot", "gpu-x.json"],
    "ncu": ["ncu"],
    "bank": ["bank"],
    "smem-gemm": ["smem-gemm"],
    "transfers": ["transfers"],
    "spec": ["spec"],
    "quant": ["quant"],
    "moe": ["moe"],
    "sched": ["sched"],
    "serve": ["serve", "--url", "http://127.0.0.1:8000"],
}


def _help_and_defaults(monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to the terminal's width
    out = []
    for topic, argv in TOPIC_ARGS.items():
        with pytest.raises(SystemExit) as exit_:
            main([topic, "--help"] if topic else ["--help"])
        assert exit_.value.code == 0
        out.append(f"=== python -m minirt.bench {topic} --help\n{capsys.readouterr().out}")
        if argv:
            args = build_parser().parse_args(argv)
            out.append(f"--- defaults of {shlex.join(argv)}\n{sorted(vars(args).items())!r}\n")
    return "".join(out)


def test_every_topic_keeps_its_help_flags_and_defaults(monkeypatch, capsys):
    text = _help_and_defaults(monkeypatch, capsys)
    if os.environ.get("MINIRT_WRITE_BENCH_HELP"):
        HELP_FILE.write_text(text)
    assert text == HELP_FILE.read_text()
