"""Speculative decoding: a draft model proposes, the target verifies in one forward.

`rejection` holds the acceptance rule (exact: the output follows the target's distribution).
Engine integration with paged-KV rollback is the next step (see README, notes for the next
session).
"""

from minirt.spec.rejection import Verdict, greedy_verify, rejection_sample

__all__ = ["Verdict", "greedy_verify", "rejection_sample"]
