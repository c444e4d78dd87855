"""The one place the server touches the engine: requests in, tokens out, one engine thread.

The engine is synchronous, so one thread owns it. Between steps it admits the requests that
arrived and aborts the ones whose client went away (their blocks return to the pool at once),
then runs one `LLM.step()` and hands each request its new tokens through its asyncio queue. A
request that arrives mid-run joins the next step: continuous batching across HTTP requests.
Every call into the engine lives in this class, so the engine can change behind it. Notebook 03.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

from minirt.sampling_params import SamplingParams
from minirt.sched import Sequence


class Overloaded(Exception):
    """The waiting queue is full: the client should retry later (HTTP 429)."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class TokenDelta:
    """What one engine step produced for one request; the last one has a finish_reason."""

    token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    error: str | None = None  # with finish_reason="error": what went wrong, in words


@dataclass(eq=False)
class ServeRequest:
    prompt_token_ids: list[int]
    params: SamplingParams
    queue: asyncio.Queue  # of TokenDelta, read by the HTTP handler
    arrival_s: float = field(default_factory=time.perf_counter)
    seq: Sequence | None = None
    num_sent: int = 0  # output tokens already handed to the queue
    first_token_s: float | None = None
    finish_s: float | None = None
    finish_reason: str | None = None
    num_cached_tokens: int = 0
    request_id: int | None = None  # with the engine in another process: its name there

    @property
    def num_output_tokens(self) -> int:
        return self.num_sent


@dataclass
class EngineSnapshot:
    """The engine's state after its last step, for /metrics and /health (plain data)."""

    num_running: int = 0
    num_waiting: int = 0
    num_blocks: int = 0
    num_blocks_used: int = 0
    num_prompt_tokens: int = 0  # of finished requests, for the prefix-cache hit rate
    num_cached_tokens: int = 0
    num_steps: int = 0

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.num_cached_tokens / max(1, self.num_prompt_tokens)

    def to_dict(self) -> dict:
        return {**asdict(self), "prefix_cache_hit_rate": self.prefix_cache_hit_rate}


@dataclass(frozen=True)
class StepRecord:
    """One engine step as the server saw it: when it ended, how long the engine thread spent on
    it (admissions, the step, handing tokens over: what the next request waits for), and its
    work. The serving simulator fits its cost model to these (`GET /steps`)."""

    end_s: float  # since the engine thread started
    ms: float
    prefill_tokens: int
    decodes: int
    context_tokens: int  # KV tokens the step's decodes read

    def to_list(self) -> list:
        return [round(self.end_s, 6), round(self.ms, 4), self.prefill_tokens, self.decodes,
                self.context_tokens]  # fmt: skip


STEP_FIELDS = [
    "end_s",
    "ms",
    "prefill_tokens",
    "decodes",
    "context_tokens",
]  # StepRecord's, in order


class EngineLoop:
    """Runs one `LLM` in a thread for many concurrent requests; `max_waiting` bounds the queue."""

    separate_process = False  # the engine shares the HTTP side's process (EngineProcess: not)
    http_chunks = 0  # stream chunks the HTTP side has written (a lagging stream merges steps)

    def __init__(self, llm, max_waiting: int = 256, on_finish=None) -> None:
        # Asked for (overlap_schedule=True, `serve --overlap`), every step() runs ahead: a
        # request's newest token is a placeholder until the next step resolves it, so only
        # resolved tokens go out, and an idle engine drains the step still in flight.
        llm.overlap_steps = llm.overlap is not None and llm.config.overlap_schedule is True
        self.llm = llm
        self.max_waiting = max_waiting
        self.on_finish = on_finish  # called in the engine thread with each finished ServeRequest
        self._limits(limits_of(llm))
        self.tokenizer = llm.tokenizer
        # ids far above generate()'s, so the engine never sees one twice
        self._ids = itertools.count(2**40)
        self._inbox: deque[tuple[str, ServeRequest]] = deque()
        self._live: dict[int, ServeRequest] = {}  # engine thread only
        self._outbox: list[tuple[asyncio.Queue, TokenDelta]] = []  # engine thread only
        self._loop: asyncio.AbstractEventLoop | None = None  # the HTTP side's, set by submit
        self._num_admitted = 0  # submitted, not finished; under _lock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.steps: deque[StepRecord] = deque(maxlen=500_000)  # the newest steps, for GET /steps
        self.num_steps_logged = 0  # ever, so a reader can ask for the steps after the Nth
        self.t0: float | None = None  # perf_counter() when the engine thread started: steps' 0

    def _limits(self, limits: dict) -> None:
        """What the HTTP side must know of the engine to check a request (plain data: a server
        whose engine runs in another process gets the same dict from it)."""
        self.eos_ids = set(limits["eos_ids"])
        self.max_model_len = limits["max_model_len"]
        self.pool_capacity_tokens = limits["pool_capacity_tokens"]
        self.vocab_size = limits["vocab_size"]
        self.max_num_seqs = limits["max_num_seqs"]
        self.snapshot = EngineSnapshot(num_blocks=limits["num_blocks"])

    # -- called from the event loop ----------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Requests the server holds at once: one full batch running plus the waiting queue."""
        return self.max_num_seqs + self.max_waiting

    def encode(self, prompt: str | list[int], max_tokens: int | None) -> tuple[list[int], int]:
        """Token ids of a prompt and the max_tokens it may have; ValueError says what is wrong."""
        vocab = self.vocab_size
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        else:
            ids = list(prompt)
            if any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
                raise ValueError(f"prompt token ids must be integers in [0, {vocab})")
        if not ids:
            raise ValueError("the prompt is empty; give it at least one token")
        room = min(self.max_model_len, self.pool_capacity_tokens) - len(ids)
        if room < 1:
            raise ValueError(
                f"this model's maximum context length is {self.max_model_len:,} tokens (the KV "
                f"pool holds {self.pool_capacity_tokens:,}) but the prompt has {len(ids):,}; "
                "shorten the prompt"
            )
        if max_tokens is None:
            return ids, room
        if max_tokens > room:
            raise ValueError(
                f"this model's maximum context length is {self.max_model_len:,} tokens; you "
                f"asked for {len(ids) + max_tokens:,} ({len(ids):,} in the prompt, {max_tokens:,} "
                "in the completion); lower max_tokens or shorten the prompt"
            )
        return ids, max_tokens

    def _admit(self) -> None:
        """Count one more request in; Overloaded when the server already holds `capacity`."""
        with self._lock:
            if self._num_admitted >= self.capacity:
                raise Overloaded(
                    f"the server holds {self._num_admitted} requests ({self.max_waiting} may "
                    "wait beside a full batch); retry after the Retry-After seconds"
                )
            self._num_admitted += 1
        self._loop = asyncio.get_running_loop()  # one event loop serves every request

    def submit(self, prompt_token_ids: list[int], params: SamplingParams) -> ServeRequest:
        """Queue a request for the engine; Overloaded when the waiting queue is full."""
        self._admit()
        req = ServeRequest(prompt_token_ids, params, asyncio.Queue())
        self._inbox.append(("add", req))
        self._wake.set()
        return req

    def abort(self, req: ServeRequest) -> None:
        """The client went away: stop the request and free its blocks (a no-op once finished)."""
        self._inbox.append(("abort", req))
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="minirt-engine", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    # -- the engine thread -------------------------------------------------------------------
    def _run(self) -> None:
        t0 = time.perf_counter()
        self._started(t0)
        scheduler = self.llm.scheduler
        while not self._stop:
            start = time.perf_counter()
            self._take_inbox()
            if not scheduler.has_unfinished():
                self.llm.drain(t0)  # overlapped: the last step's tokens, all dropped
                self._publish()
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                finished = self.llm.step(t0)
            except Exception as e:  # every request in flight gets an explicit error
                self._fail_all(f"the engine failed: {type(e).__name__}: {e}")
                continue
            self._deliver(finished)
            self._publish()
            self._log_step(scheduler.last_batch, start, t0)
        self._fail_all("the server is shutting down")

    def _started(self, t0: float) -> None:
        """Steps' end_s count from `t0`. perf_counter() is one clock for every process of a Linux
        machine (CLOCK_MONOTONIC), so a client on the same machine can line its times up with
        the steps' (`GET /steps` gives t0_s)."""
        self.t0 = t0

    def _log_step(self, batch, start: float, t0: float) -> None:
        end = time.perf_counter()
        decodes = [s for s, p in zip(batch.seqs, batch.is_prefill, strict=True) if not p]
        record = StepRecord(end - t0, (end - start) * 1e3, batch.num_prefill_tokens,
                            len(decodes), sum(s.num_computed_tokens for s in decodes))  # fmt: skip
        with self._lock:
            self.steps.append(record)
            self.num_steps_logged += 1

    def steps_since(self, n: int) -> tuple[int, list[StepRecord]]:
        """(steps logged so far, the steps after the n-th that are still kept)."""
        with self._lock:
            total, kept = self.num_steps_logged, list(self.steps)
        first = total - len(kept)
        return total, kept[max(0, n - first) :]

    def _take_inbox(self) -> None:
        while self._inbox:
            what, req = self._inbox.popleft()
            if what == "add":
                req.seq = Sequence(next(self._ids), req.prompt_token_ids, req.params)
                self._live[req.seq.seq_id] = req
                self.llm.scheduler.add(req.seq)
            elif req.seq is not None and req.seq.seq_id in self._live:
                self.llm.scheduler.finish(req.seq, "abort")
                self.llm.runner.release(req.seq.seq_id)
                self._finish(req, "abort")
        self._flush()

    def _deliver(self, finished: list[Sequence]) -> None:
        now = time.perf_counter()
        done = {s.seq_id for s in finished}
        for seq_id, req in list(self._live.items()):
            new = req.seq.output_token_ids[req.num_sent :]
            if new and new[-1] < 0:  # the step in flight's placeholder: sent once resolved
                new = new[:-1]
            if not new and seq_id not in done:
                continue
            if new and req.first_token_s is None:
                req.first_token_s = now
            req.num_sent += len(new)
            if seq_id in done:
                self._finish(req, req.seq.finish_reason or "stop", new)
            else:
                self._put(req, TokenDelta(new))
        self._flush()

    def _finish(self, req: ServeRequest, reason: str, tokens=(), error: str | None = None) -> None:
        req.finish_s = time.perf_counter()
        req.finish_reason = reason
        if req.seq is not None:
            req.num_cached_tokens = min(req.seq.num_cached_tokens, req.seq.num_prompt_tokens)
            self._live.pop(req.seq.seq_id, None)
        with self._lock:
            self._num_admitted -= 1
        self.snapshot.num_prompt_tokens += len(req.prompt_token_ids)
        self.snapshot.num_cached_tokens += req.num_cached_tokens
        self._put(req, TokenDelta(list(tokens), reason, error))
        if self.on_finish is not None:
            self.on_finish(req)

    def _fail_all(self, message: str) -> None:
        if self.llm.overlap is not None:  # a step in flight after an error: its tokens are lost
            self.llm.overlap.inflight = None
        for seq in self.llm.scheduler.abort_all():
            self.llm.runner.release(seq.seq_id)
        for req in list(self._live.values()):
            self._finish(req, "error", error=message)
        while self._inbox:  # arrived but never admitted: they get the same answer
            what, req = self._inbox.popleft()
            if what == "add":
                self._finish(req, "error", error=message)
        self._flush()

    def _put(self, req: ServeRequest, delta: TokenDelta) -> None:
        self._outbox.append((req.queue, delta))

    def _flush(self) -> None:
        """Hand this step's deltas over in one callback: one wake-up of the event loop per step,
        not one per request (with hundreds of streams that is most of the HTTP side's cost)."""
        if not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        hand_over(self._loop, batch)

    def _publish(self) -> None:
        s, bm = self.llm.scheduler, self.llm.block_manager
        waiting = len(s.waiting) + len(s.swapped)
        self.snapshot.num_running = len(s.running)
        self.snapshot.num_waiting = waiting + sum(1 for w, _ in list(self._inbox) if w == "add")
        self.snapshot.num_blocks_used = bm.num_blocks - bm.num_free_blocks
        self.snapshot.num_steps = s.num_steps


def limits_of(llm) -> dict:
    """The engine's limits as plain data (see EngineLoop._limits)."""
    return {"eos_ids": sorted(llm.eos_ids), "max_model_len": llm.max_model_len,
            "pool_capacity_tokens": llm.pool_capacity_tokens,
            "vocab_size": llm.model_config.vocab_size, "max_num_seqs": llm.config.max_num_seqs,
            "num_blocks": llm.num_blocks, "model_path": str(llm.model_path)}  # fmt: skip


def hand_over(
    loop: asyncio.AbstractEventLoop | None, batch: list[tuple[asyncio.Queue, TokenDelta]]
) -> None:
    """Put each delta into its request's queue, from another thread, in one wake-up of `loop`."""
    if not batch or loop is None:
        return
    try:
        loop.call_soon_threadsafe(_put_all, batch)
    except RuntimeError:  # the event loop closed: nobody is listening any more
        pass


def _put_all(batch: list[tuple[asyncio.Queue, TokenDelta]]) -> None:
    for queue, delta in batch:
        queue.put_nowait(delta)
