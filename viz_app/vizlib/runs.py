"""Live engine runs for the pages: the embedded model, traced, cached by their settings.

A run is `LLM(**settings.engine_kwargs()).generate(prompts)` with `trace=True`; the page gets the
trace as a plain dict (so `st.cache_data` can keep it) and reads it with `minirt.trace.load_trace`,
the same path an uploaded trace takes. A fresh `LLM` per run: a reused engine would start with
the previous run's prefix cache and the pictures would depend on what was clicked before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
import torch

from minirt import LLM, SamplingParams
from minirt.config import ModelConfig
from minirt.kv import kv_cache_bytes_per_token
from minirt.model.loader import resolve_model_path
from minirt.model.tokenizer import Tokenizer, load_tokenizer

# The dashboard runs the embedded model on CPU in float32 on every machine: it is tiny (a run
# takes about a second), the pictures are then identical everywhere, and the block count a knob
# asks for is exact (float32 is what the engine picks on CPU anyway).
DEVICE = "cpu"
DTYPE = "float32"

# Code prompts like the embedded model was trained on; `\n` is a newline (one prompt per line).
SCHEDULER_PROMPTS = (
    "def fib(n):\\n    ",
    "import os\\nimport sys\\n\\ndef main():\\n",
    "class Config:\\n    def __init__(self):",
    "# utilities for files\\nimport os\\n\\ndef read(path):",
    "for i in range(10):\\n    print(",
)
# A shared header (5 full blocks of 8 tokens): later prompts find it in the prefix cache.
SHARED_HEADER = "# utilities for working with files\\nimport os\\n\\n"
BLOCK_TABLE_PROMPTS = (
    SHARED_HEADER + "def read_lines(path):",
    SHARED_HEADER + "class Config:",
    SHARED_HEADER + "def main():",
    "def fib(n):",
)


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides a run: prompts, sampling length and the engine knobs."""

    prompts: tuple[str, ...]
    max_tokens: int = 24
    block_size: int = 8
    kv_cache_bytes: int = 1024 * 1024
    num_kv_blocks: int | None = None  # the pool in blocks (then kv_cache_bytes is unused)
    max_num_batched_tokens: int = 32
    enable_chunked_prefill: bool = True
    prefix_cache: str | None = "hash"  # None: no prefix caching
    max_model_len: int = 128
    extra: dict[str, Any] = field(default_factory=dict)  # any other LLM(...) argument

    def engine_kwargs(self) -> dict[str, Any]:
        return {
            "device": DEVICE,
            "dtype": DTYPE,
            "trace": True,
            "block_size": self.block_size,
            "kv_cache_bytes": self.kv_cache_bytes,
            "num_kv_blocks": self.num_kv_blocks,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "enable_chunked_prefill": self.enable_chunked_prefill,
            "prefix_cache": self.prefix_cache,
            "max_model_len": self.max_model_len,
            **self.extra,
        }

    def sampling_params(self) -> SamplingParams:
        # Greedy and ignore_eos: every request runs max_tokens steps, so runs are reproducible
        # and the pictures don't change shape when the model happens to emit EOS early.
        return SamplingParams(temperature=0.0, max_tokens=self.max_tokens, ignore_eos=True)


def parse_prompts(text: str) -> tuple[str, ...]:
    """One prompt per non-empty line; the two characters `\\n` inside a line become a newline."""
    return tuple(line.replace("\\n", "\n") for line in text.splitlines() if line.strip())


@st.cache_resource
def embedded_model_config() -> ModelConfig:
    """The shapes of the embedded target (read once): what one KV block of it costs."""
    return ModelConfig.from_pretrained(resolve_model_path(None))


@st.cache_resource
def embedded_tokenizer() -> Tokenizer:
    return load_tokenizer(resolve_model_path(None))


def min_pool_blocks(prompts: tuple[str, ...], block_size: int) -> int:
    """The smallest pool the engine runs these prompts in: it refuses a prompt that fills the
    whole pool, since the first new token needs a slot too (LLM checks every prompt)."""
    longest = max((len(embedded_tokenizer().encode(p)) for p in prompts), default=0)
    return longest // block_size + 1


def slider_from(container: Any, label: str, lo: int, hi: int, default: int, key: str, **kw) -> int:
    """A slider whose lower end moves with other widgets (the prompts, the block size): it keeps
    the learner's value while that is still allowed and moves up to the new lower end when not.
    (A change of range makes Streamlit a new widget; the value is carried over by its key.)"""
    value = max(lo, st.session_state.get(key, default))
    return container.slider(label, lo, max(hi, lo), value, key=key, **kw)


def block_bytes(block_size: int) -> int:
    """Bytes of one KV block of the embedded target in the dashboard's dtype."""
    return block_size * kv_cache_bytes_per_token(embedded_model_config(), DTYPE)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@st.cache_data(max_entries=32, show_spinner="Running the embedded engine…")
def run_engine(settings: RunSettings) -> dict[str, Any]:
    """Generate with a fresh traced engine; returns the trace dict, the stats and the outputs.

    Raises the engine's own ValueError for settings it refuses (pages show it with st.error).
    """
    # One thread: the embedded model's matrices are tiny, so extra threads save nothing, and on a
    # busy machine (other notebooks, a browser) spinning OpenMP threads made a 1 s run take 30 s.
    with torch_threads(1):
        llm = LLM(**settings.engine_kwargs())
        outs = llm.generate(list(settings.prompts), settings.sampling_params(), use_tqdm=False)
    return {
        "trace": llm.recorder.to_dict(),
        "stats": llm.last_stats.to_dict(),
        "num_blocks": llm.num_blocks,
        "outputs": [
            {
                "request_id": o.request_id,
                "prompt": o.prompt,
                "text": o.text,
                "finish_reason": o.finish_reason,
                "num_cached_tokens": o.num_cached_tokens,
            }
            for o in outs
        ],
    }
