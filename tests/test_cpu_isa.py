"""The cpu_isa set (conftest.py at the root) names notebooks that exist, and ./workbench test
re-runs it under the vector kernels of other CPUs."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def root_conftest():
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_cpu_isa_notebook_exists():
    names = root_conftest().CPU_ISA_NOTEBOOKS
    assert names and all((ROOT / "notebooks" / n).is_file() for n in names), names


def test_the_workbench_reruns_the_cpu_isa_set_on_plain_and_avx2_kernels():
    script = (ROOT / "workbench").read_text()
    assert "-m cpu_isa" in script and 'ATEN_CPU_CAPABILITY="$isa"' in script
    assert "echo default" in script and "AVX512*) echo avx2" in script
