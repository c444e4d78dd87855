"""Moved to `minirt.workload` (one module makes every request set); kept for notebook 03."""

from minirt.workload import DISTRIBUTIONS, WorkloadSpec, arrival_times, make_requests  # noqa: F401
