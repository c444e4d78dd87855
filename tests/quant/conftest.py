"""Fixtures shared by the quantization tests that run the embedded model."""

import pytest
import torch

from minirt import LLM


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the embedded model is tiny, and on a busy 2-core machine two OpenMP
    threads spinning against other processes made a module 7x slower (60 s vs 8 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def llm():
    return LLM(device="cpu")
