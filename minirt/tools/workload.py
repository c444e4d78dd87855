"""Moved to `minirt.workload` (one module makes every request set); kept for notebooks 01-03."""

from minirt.workload import Workload, mixed_requests, source_tokens  # noqa: F401
