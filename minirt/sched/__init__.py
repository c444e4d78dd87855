"""Who runs: sequences, and the continuous-batching scheduler that picks each step's batch."""

from minirt.sched.scheduler import Batch, Row, Scheduler, SchedulerBase
from minirt.sched.sequence import Sequence, SequenceStatus

__all__ = ["Batch", "Row", "Scheduler", "SchedulerBase", "Sequence", "SequenceStatus"]
