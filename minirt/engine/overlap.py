"""The overlapped scheduler (SGLang's): the CPU prepares step n + 1 while the device runs step n.

A step is launched without waiting for its tokens, so the device does not idle while the host
schedules, builds inputs and reads tokens: each sampling sequence gets a placeholder -(row + 1)
that the next step's inputs resolve on the device. The host learns one step late that a sequence
stopped (its extra token is computed and dropped; greedy output is unchanged). Each step records
its CPU and device time (CUDA events; on CPU the forward's wall time). Notebook 11 measures both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from minirt.sched import Batch, Sequence, SequenceStatus


@dataclass
class InFlight:
    """A launched step whose tokens the host has not read yet."""

    batch: Batch
    tokens: torch.Tensor | None  # [num sampling rows] on the device
    sampling: list[Sequence]  # the sequences of those rows, in order
    computed: list[int]  # num_computed_tokens before the step (the trace)
    cpu_s: float  # host time spent on this step so far
    device_s: float = 0.0  # CPU device: the forward's wall time
    events: tuple | None = None  # CUDA: (start, end) events around the forward
    host_tokens: torch.Tensor | None = None  # CUDA: pinned copy of `tokens`, ready at events[1]
    schedule_s: float = 0.0
    placeholder_at: list[int] = field(default_factory=list)


class OverlapLoop:
    """Runs the engine's parts (the plain step's scheduler, runner and `check_stop`) one step
    ahead of the tokens it has read. `on_step(batch, computed, finished, now_s, schedule_s,
    forward_s, cpu_s=, device_s=)` hears of each resolved step (the trace)."""

    def __init__(self, scheduler, runner, on_step=None):
        self.scheduler, self.runner, self.on_step = scheduler, runner, on_step
        self.inflight: InFlight | None = None

    def step(self, t0: float) -> list[Sequence]:
        """Schedule and launch step n + 1, then read step n's tokens; returns who finished."""
        c0 = time.perf_counter()
        batch = self.scheduler.schedule()
        c1 = time.perf_counter()
        if not batch.seqs:
            if self.inflight is None:
                raise RuntimeError("the scheduler found nothing to run and no step is in flight")
            return self.drain(t0)
        fl = self._launch(batch)
        fl.schedule_s = c1 - c0
        fl.cpu_s += c1 - c0
        finished = self.drain(t0)
        c2 = time.perf_counter()
        # The inputs of this step are resolved now: advance it (placeholders for its tokens).
        sampled = {s.seq_id: [-(i + 1)] for i, s in enumerate(fl.sampling)}
        self.scheduler.update(batch, sampled)
        fl.placeholder_at = [s.num_tokens - 1 for s in fl.sampling]
        fl.cpu_s += time.perf_counter() - c2
        self.inflight = fl
        return finished

    def _launch(self, batch: Batch) -> InFlight:
        runner = self.runner
        prev = self.inflight.tokens if self.inflight is not None else None
        computed = [s.num_computed_tokens for s in batch.seqs]
        sampling = [s for s, smp in zip(batch.seqs, batch.samples, strict=True) if smp]
        c0 = time.perf_counter()
        if runner.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            tokens = runner.launch(batch, prev)
            host = None
            if tokens is not None:  # queued behind the step: reading it waits for this step only
                host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
                host.copy_(tokens, non_blocking=True)
            end.record()
            return InFlight(batch, tokens, sampling, computed, time.perf_counter() - c0,
                            events=(start, end), host_tokens=host)  # fmt: skip
        runner.prepare_s = 0.0
        tokens = runner.launch(batch, prev)  # synchronous: building inputs is host time,
        prep = runner.prepare_s  # the rest (forward, sampling) the "device"'s
        return InFlight(batch, tokens, sampling, computed, prep, time.perf_counter() - c0 - prep)

    def drain(self, t0: float) -> list[Sequence]:
        """Read the in-flight step's tokens (waits for it), put them in place of the
        placeholders, finish the sequences that stopped. Nothing in flight: nothing to do."""
        fl, self.inflight = self.inflight, None
        if fl is None:
            return []
        tokens = fl.tokens
        if fl.events is not None:  # not tokens.tolist(): that waits for the step launched since
            fl.events[1].synchronize()
            fl.device_s = fl.events[0].elapsed_time(fl.events[1]) / 1e3
            tokens = fl.host_tokens
        tokens = tokens.tolist() if tokens is not None else []
        c0 = time.perf_counter()
        t_done = c0 - t0
        finished = []
        for seq, at, token in zip(fl.sampling, fl.placeholder_at, tokens, strict=True):
            if seq.status is SequenceStatus.FINISHED:
                continue  # it stopped a step earlier: this token was never its own
            seq.token_ids[at] = token
            if self.scheduler.check_stop(seq, t_done):
                self.runner.release(seq.seq_id)
                finished.append(seq)
        fl.cpu_s += time.perf_counter() - c0
        if self.on_step is not None:
            self.on_step(fl.batch, fl.computed, finished, t_done, fl.schedule_s, fl.device_s,
                         cpu_s=fl.cpu_s, device_s=fl.device_s)  # fmt: skip
        return finished
