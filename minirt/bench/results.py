"""Moved to `minirt.results` (one module for the results files, below both bench and tools);
this name stays importable for code written against it."""

from minirt.results import (  # noqa: F401
    DEFAULT_OUT,
    SCHEMA,
    cpu_model,
    load_results,
    machine_info,
    versions,
    write_results,
)
