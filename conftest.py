"""The `cpu_isa` marker: tests and notebooks whose numbers depend on the CPU's vector kernels.

PyTorch picks its kernels for the CPU it runs on (AVX-512, AVX2 or plain C++; on Arm, NEON or
SVE), and their last bits differ: a sum is added up in another order, an exp is approximated
another way. A claim about numbers that rounding amplifies — quantized perplexities, above all —
must hold on every kernel set. `./workbench test` re-runs what is marked here under
ATEN_CPU_CAPABILITY=default (and =avx2 on an AVX-512 CPU). Mark a test `@pytest.mark.cpu_isa`;
list a notebook below. How the set was found: README, "Checking the suite on other CPUs".
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Notebooks that print numbers rounding amplifies, re-run whole (their cells share a kernel).
CPU_ISA_NOTEBOOKS = {
    "04_flash_attention_and_hopper.ipynb": "a sum of exps of torch.randn, whose last bits vary",
    "08_quantization.ipynb": "quantized perplexities on the embedded model",
}


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
