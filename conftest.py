"""The `cpu_isa` marker: tests and notebooks whose numbers depend on the CPU's vector kernels.

PyTorch picks its kernels for the CPU it runs on (AVX-512, AVX2 or plain C++; on Arm, NEON or
SVE), and their last bits differ: a sum is added up in another order, an exp is approximated
another way. A claim about numbers that rounding amplifies — quantized perplexities, above all —
must hold on every kernel set. `./workbench test` re-runs what is marked here under
ATEN_CPU_CAPABILITY=default (and =avx2 on an AVX-512 CPU). Mark a test `@pytest.mark.cpu_isa`;
list a notebook below. How the set was found: README, "Checking the suite on other CPUs".
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Notebooks that print numbers rounding amplifies, re-run whole (their cells share a kernel).
CPU_ISA_NOTEBOOKS = {
    "04_flash_attention_and_hopper.ipynb": "a sum of exps of torch.randn, whose last bits vary",
    "08_quantization.ipynb": "quantized perplexities on the embedded model",
}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before a notebook's cell (its kernel starts with the first): no MPLBACKEND, so the kernel
    draws inline as the stored outputs were drawn. Importing streamlit (the dashboard tests'
    conftest) and the lab grader set MPLBACKEND=Agg process-wide; with several test processes
    even the parent's collection may set it before the workers start, and kernels inherit it."""
    if Path(str(item.fspath)).suffix == ".ipynb":
        os.environ.pop("MPLBACKEND", None)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cpu_isa: numbers that depend on the CPU's vector kernels; ./workbench test re-runs these "
        "under ATEN_CPU_CAPABILITY=default (and avx2)",
    )
    config.addinivalue_line(
        "markers",
        "on_gpu_too: runs on CUDA where it is visible, else on the CPU; on a GPU machine "
        "./workbench test runs it in both passes",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).name in CPU_ISA_NOTEBOOKS:
            item.add_marker(pytest.mark.cpu_isa)
