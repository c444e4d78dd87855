"""Diagnostic, used as sitecustomize.py on PYTHONPATH: logs every Triton JIT compile (an in-memory
cache miss) with its time and specialization to /tmp/compiles-<pid>.log. Its output on the H100:
triton-recompiles-h100-20261206.json (docs/development.md, serving simulator calibration)."""

import os
import time

try:
    from triton import knobs

    def _hook(*args, **kwargs):
        with open(f"/tmp/compiles-{os.getpid()}.log", "a") as f:
            c = kwargs.get("compile") or {}
            f.write(f"{time.time():.3f}\t{kwargs.get('repr')}\t{c.get('configs')}\n")
        return False  # not handled here: Triton compiles as usual

    knobs.runtime.jit_cache_hook = _hook
except ImportError:  # no Triton, nothing to log
    pass
