"""The engine in a process of its own: the HTTP side and the engine stop sharing one interpreter.

With the engine on a thread of the server's process (`EngineLoop`), every step waits for Python's
GIL while the event loop parses JSON and writes server-sent events: on the H100 a decode step of
200 sequences took 20 ms in the server against 7 ms offline. vLLM runs its engine core in a
separate process for this reason, and so does this module:

    server process                               engine process
    FastAPI handlers -- submit/abort (JSON) -->  command thread -> EngineLoop's inbox
    reader thread   <-- deltas, steps (JSON) --  EngineLoop: admit, LLM.step(), hand tokens over

`EngineProcess` keeps `EngineLoop`'s interface (encode, submit, abort, snapshot, steps_since,
start, close), so the app does not know which one it runs. The child runs an `EngineLoop` whose
tokens go into a pipe instead of asyncio queues. Messages are JSON, never pickle.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing as mp
import threading
import time
from collections import deque

from minirt.sampling_params import SamplingParams
from minirt.serve.engine_loop import (
    EngineLoop,
    ServeRequest,
    StepRecord,
    TokenDelta,
    hand_over,
    limits_of,
)


def _send(conn, message) -> None:
    conn.send_bytes(json.dumps(message).encode())


def _recv(conn):
    return json.loads(conn.recv_bytes())


# -- the engine process ----------------------------------------------------------------------
class _ChildLoop(EngineLoop):
    """EngineLoop in the engine process: a request's `queue` is its id, and each hand-over of
    tokens is one message on the pipe (with the step's record and the engine's state)."""

    def __init__(self, llm, out) -> None:
        super().__init__(llm)
        self.out = out
        self.requests: dict[int, ServeRequest] = {}
        self._sent_state: dict | None = None

    def _flush(self) -> None:
        if not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        deltas = []
        for rid, d in batch:
            cached = self.requests.pop(rid).num_cached_tokens if d.finish_reason else 0
            deltas.append([rid, d.token_ids, d.finish_reason, d.error, cached])
        _send(self.out, {"deltas": deltas})

    def _started(self, t0: float) -> None:
        super()._started(t0)
        _send(self.out, {"clock": t0})

    def _log_step(self, batch, start: float, t0: float) -> None:
        super()._log_step(batch, start, t0)
        _send(self.out, {"step": self.steps[-1].to_list()})

    def _publish(self) -> None:
        super()._publish()
        state = dict(vars(self.snapshot))
        if state != self._sent_state:  # after each step, and when an abort empties the engine
            self._sent_state = state
            _send(self.out, {"snapshot": state})

    def take_commands(self, commands) -> None:
        """The command thread: requests in, aborts, and the order to stop."""
        while True:
            what, *args = _recv(commands)
            if what == "add":
                rid, ids, params = args
                req = ServeRequest(ids, SamplingParams(**params), queue=rid)
                self.requests[rid] = req
                self._inbox.append(("add", req))
            elif what == "abort" and args[0] in self.requests:
                self._inbox.append(("abort", self.requests[args[0]]))
            elif what == "stop":
                self._stop = True
            self._wake.set()
            if what == "stop":
                return


def _engine_main(model, engine_kwargs: str, threads: int | None, commands, out) -> None:
    """The engine process: build the LLM, say what it can take, then serve until told to stop."""
    import torch

    from minirt import LLM

    if threads:
        torch.set_num_threads(threads)
    try:
        llm = LLM(model, **json.loads(engine_kwargs))
    except Exception as e:  # the server says why it cannot start, instead of hanging
        _send(out, {"error": f"{type(e).__name__}: {e}"})
        return
    loop = _ChildLoop(llm, out)
    _send(out, {"limits": limits_of(llm)})
    threading.Thread(target=loop.take_commands, args=(commands,), daemon=True).start()
    loop._run()
    _send(out, {"closed": True})


# -- the server process ----------------------------------------------------------------------
class EngineProcess(EngineLoop):
    """`EngineLoop`'s interface with the engine in a child process (started by `start`). It
    keeps EngineLoop's request checks (`encode`, `capacity`, `steps_since`) and replaces what
    touches the engine: the state here is what the child's messages said."""

    separate_process = True

    def __init__(self, model=None, max_waiting: int = 256, threads: int | None = None,
                 start_timeout_s: float = 600, **engine_kwargs) -> None:  # fmt: skip
        self.model, self.max_waiting, self.threads = model, max_waiting, threads
        self.engine_kwargs = json.dumps(engine_kwargs)  # plain values only: they cross as JSON
        self.start_timeout_s = start_timeout_s
        self.on_finish = None
        self._ids = itertools.count(1)
        self._requests: dict[int, ServeRequest] = {}  # reader thread and event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._num_admitted = 0
        self._lock = threading.Lock()
        self.steps: deque[StepRecord] = deque(maxlen=500_000)
        self.num_steps_logged = 0
        self.t0: float | None = None
        self._proc = None
        self.tokenizer = None

    def start(self) -> None:
        """Spawn the engine and wait until its model is loaded (a second call does nothing)."""
        if self._proc is not None:
            return
        from minirt.model.tokenizer import load_tokenizer

        ctx = mp.get_context("spawn")  # CUDA cannot be forked
        cmd_read, self._commands = ctx.Pipe(duplex=False)
        self._out, out_write = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_engine_main, name="minirt-engine", daemon=True,
                                 args=(self.model, self.engine_kwargs, self.threads, cmd_read,
                                       out_write))  # fmt: skip
        self._proc.start()
        out_write.close()
        if not self._out.poll(self.start_timeout_s):
            self._proc.kill()
            raise RuntimeError(f"the engine process did not start in {self.start_timeout_s} s")
        hello = _recv(self._out)
        if "error" in hello:
            raise RuntimeError(f"the engine process could not start: {hello['error']}")
        self._limits(hello["limits"])
        self.model_path = hello["limits"]["model_path"]
        self.tokenizer = load_tokenizer(self.model_path)
        self._reader = threading.Thread(target=self._read, name="minirt-engine-reader",
                                        daemon=True)  # fmt: skip
        self._reader.start()

    def submit(self, prompt_token_ids: list[int], params: SamplingParams) -> ServeRequest:
        self._admit()
        rid = next(self._ids)
        req = ServeRequest(prompt_token_ids, params, asyncio.Queue(), request_id=rid)
        self._requests[rid] = req
        _send(self._commands, ["add", rid, prompt_token_ids, params.to_dict()])
        return req

    def abort(self, req: ServeRequest) -> None:
        _send(self._commands, ["abort", req.request_id])

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            _send(self._commands, ["stop"])
        except OSError:
            pass
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
        self._reader.join(timeout=5)
        self._proc = None

    def _read(self) -> None:
        """The reader thread: each message's tokens go to their requests' queues in one wake-up
        of the event loop; a finished request is counted out and observed."""
        while True:
            try:
                message = _recv(self._out)
            except (EOFError, OSError):
                message = {"closed": True, "error": "the engine process ended"}
            if "deltas" in message:
                self._deliver_message(message["deltas"])
            elif "step" in message:
                with self._lock:
                    self.steps.append(StepRecord(*message["step"]))
                    self.num_steps_logged += 1
            elif "clock" in message:
                self.t0 = message["clock"]
            elif "snapshot" in message:
                for name, value in message["snapshot"].items():
                    setattr(self.snapshot, name, value)
            if "closed" in message:
                self._fail_open(message.get("error", "the server is shutting down"))
                return

    def _deliver_message(self, deltas: list) -> None:
        now, batch = time.perf_counter(), []
        for rid, tokens, reason, error, cached in deltas:
            req = self._requests.get(rid)
            if req is None:
                continue
            if tokens and req.first_token_s is None:
                req.first_token_s = now
            req.num_sent += len(tokens)
            if reason is not None:
                self._finished(rid, req, reason, cached)
            batch.append((req.queue, TokenDelta(tokens, reason, error)))
        hand_over(self._loop, batch)

    def _finished(self, rid: int, req: ServeRequest, reason: str, cached: int) -> None:
        req.finish_s, req.finish_reason, req.num_cached_tokens = time.perf_counter(), reason, cached
        self._requests.pop(rid, None)
        with self._lock:
            self._num_admitted -= 1
        if self.on_finish is not None:
            self.on_finish(req)

    def _fail_open(self, message: str) -> None:
        """The engine is gone: every request still open gets an explicit error."""
        batch = []
        for rid, req in list(self._requests.items()):
            self._finished(rid, req, "error", 0)
            batch.append((req.queue, TokenDelta([], "error", message)))
        hand_over(self._loop, batch)
