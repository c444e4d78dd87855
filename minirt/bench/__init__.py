"""Benchmarks: `python -m minirt.bench <topic>` measures and writes one JSON file per run.

Every topic writes through `minirt.results.write_results`, so results from a laptop CPU and
from an H100 share one shape (`bench/results/<device>/<topic>-<date>.json`).
"""

from minirt.results import load_results, write_results

__all__ = ["load_results", "write_results"]
