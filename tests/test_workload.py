"""minirt.workload makes the same requests as the three generators it replaced, for the seeds and
configurations their callers use: the fingerprints below were recorded from
minirt.sched.workloads, minirt.tools.workload, minirt.bench.serve_workload and bench gpu's
offline_workload before they became one module. A notebook's stored outputs, the benchmarks'
requests and the sched benchmark's decisions rest on them; a deliberate change updates them."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict

import pytest

from minirt import workload as W
from minirt.model.loader import EMBEDDED
from minirt.model.tokenizer import load_tokenizer


def _sched(*works: W.Workload) -> list:
    return [
        {"name": w.name, "prompts": w.prompts, "max_tokens": w.max_tokens, "dict": w.to_dict()}
        for w in works
    ]


def _mixed(*args, **kw) -> dict:
    w = W.mixed_requests(load_tokenizer(EMBEDDED["target"]), *args, **kw)
    params = [asdict(p) for p in w.params]
    return {
        "prompts": w.prompts,
        "params": params,
        "prompt_lens": w.prompt_lens,
        "output_lens": w.output_lens,
    }


def _pairs(w: W.Workload) -> list:
    return [[p, n] for p, n in zip(w.prompts, w.output_lens, strict=True)]


def _serve(n: int, variants=(0,), **spec) -> list:
    return [_pairs(W.make_requests(W.WorkloadSpec(**spec), n, variant=v)) for v in variants]


def _arrivals() -> list:
    rates = (2.0, 4.0, 6.0, 8.0, 16.0, math.inf)
    knobs = [(n, r, b, s) for n in (16, 32) for r in rates for b in (1.0, 0.25) for s in (0, 1)]
    return [W.arrival_times(*k) for k in knobs]


CASES = {  # caller: (requests, fingerprint)
    "bench sched cpu, notebook 11": (lambda: _sched(*W.standard()), "1e933e6a971e2de8"),
    "bench sched cuda, notebook 11": (
        lambda: _sched(*W.standard(scale=8, vocab=151936, length=4)),
        "5ade347ffc987078",
    ),
    "notebook 11 few-shot": (
        lambda: _sched(W.few_shot(num_requests=16, num_groups=4, max_tokens=2)),
        "be7127af72ae4bed",
    ),
    "lab 7 few-shot": (
        lambda: _sched(W.few_shot(num_requests=16, num_groups=4, system_len=48, question_len=8)),
        "749d9e86191723f2",
    ),
    "tests/bench few-shot": (
        lambda: _sched(W.few_shot(4, 1, system_len=40, question_len=6, max_tokens=3)),
        "bd98956e07a46d68",
    ),
    "multi-turn and branching, seeds 0-2": (
        lambda: _sched(*[f(seed=s) for f in (W.multi_turn, W.branching) for s in range(3)]),
        "19c64c66b7732a49",
    ),
    "source text": (
        lambda: W.source_tokens(load_tokenizer(EMBEDDED["target"])),
        "f70166831eafeeaa",
    ),
    "notebook 01": (lambda: _mixed(32, (16, 200), (8, 120), seed=0), "6de452bea36746c7"),
    "notebook 02": (lambda: _mixed(16, (8, 32), (4, 64), seed=1), "afbec0024eb22ac7"),
    "notebook 03 requests": (lambda: _mixed(8, (32, 256), (32, 32), seed=0), "ab246e5878f96853"),
    "notebook 03 sweep": (lambda: _mixed(64, (64, 64), (32, 32), seed=1), "deb3176d3c88d7cd"),
    "notebook 03 serve": (lambda: _serve(16, range(4)), "b2a7403d3bd04832"),
    "bench serve defaults": (lambda: _serve(32, range(6), seed=0), "dc7f482bb5f5dd35"),
    "bench serve shared prefixes": (
        lambda: _serve(50, distribution="sharegpt", shared_prefix_len=20, num_prefixes=2, seed=3)[
            0
        ],
        "188199be90f62aca",
    ),
    "bench serve fixed": (
        lambda: _serve(4, distribution="fixed", prompt_len=7, output_len=5)[0],
        "8deeba364e4e1690",
    ),
    "bench serve spec": (
        lambda: W.WorkloadSpec(shared_prefix_len=8, num_prefixes=3, seed=2).to_dict(),
        "e79ba2d83af109bb",
    ),
    "bench serve arrivals": (_arrivals, "4ed096c420aebdad"),
    "bench gpu offline": (lambda: _pairs(W.uniform(256, 100, 1024, seed=0)), "34bf2b2896345bd9"),
}


@pytest.mark.parametrize("caller", CASES)
def test_the_requests_are_the_ones_the_old_generators_made(caller):
    make, fingerprint = CASES[caller]
    assert hashlib.sha256(json.dumps(make()).encode()).hexdigest()[:16] == fingerprint


def test_a_workload_file_gives_the_requests_it_gave(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text('{"prompt_len": 3, "output_len": 2}\n{"prompt_len": 9, "output_len": 4}\n')
    made = json.dumps(_serve(3, file=str(path))[0]).encode()
    assert hashlib.sha256(made).hexdigest()[:16] == "b54c05f4a88b0700"
