"""Moved to `minirt.workload` (one module makes every request set); kept for notebook 11's and
lab 7's imports."""

from minirt.workload import Workload, branching, few_shot, multi_turn, no_sharing, standard  # noqa: F401
