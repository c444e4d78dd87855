"""Who runs: sequences, and the continuous-batching scheduler that picks each step's batch."""

from minirt.sched.scheduler import Batch, Scheduler
from minirt.sched.sequence import Sequence, SequenceStatus

__all__ = ["Batch", "Scheduler", "Sequence", "SequenceStatus"]
