"""Start a server: `serve()` for `python -m minirt serve`, `ServerThread` for tests and benches.

Both build the same app: an engine loop around an `LLM`, FastAPI on uvicorn. `ServerThread` runs
the engine on a thread beside uvicorn's event loop; `serve` runs it in a process of its own
(`engine_proc`), so HTTP work and engine steps do not take turns on one interpreter. The embedded
model is tiny, so torch gets one or two CPU threads and uvicorn keeps a core for HTTP. Notebook 03.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import uvicorn

from minirt.ports import free_port
from minirt.serve.app import build_app
from minirt.serve.chat import ChatTemplate
from minirt.serve.engine_loop import EngineLoop


def served_name(model: str | Path | None) -> str:
    """The name clients send as `model`: what was asked for ('target' for the embedded one)."""
    return "target" if model is None else str(model)


def make_app(llm, model_name: str, max_waiting: int = 256):
    engine = EngineLoop(llm, max_waiting=max_waiting)
    return build_app(engine, model_name, ChatTemplate(llm.model_path))


class ServerThread:
    """uvicorn in a background thread on a free port: `with ServerThread(llm) as url: ...`;
    `ServerThread(engine=EngineProcess(...))` serves an engine running in its own process."""

    def __init__(
        self,
        llm=None,
        model_name: str = "target",
        max_waiting: int = 256,
        host: str = "127.0.0.1",
        port: int | None = None,
        engine: EngineLoop | None = None,
    ) -> None:
        if engine is None:
            self.app = make_app(llm, model_name, max_waiting)
        else:
            engine.start()  # an EngineProcess loads its model now; the app needs its path
            self.app = build_app(engine, model_name, ChatTemplate(engine.model_path))
        self.engine: EngineLoop = self.app.state.engine
        port = port or free_port(host)
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self) -> str:
        """Start serving; return the URL once uvicorn listens."""
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start; see its log above")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        """Stop uvicorn and the engine thread; the LLM is free for offline use again."""
        self.server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(
    model: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_waiting: int = 256,
    threads: int | None = None,
    engine: str = "process",
    **engine_kwargs,
) -> int:
    """Load the model and serve it until Ctrl-C (the blocking `python -m minirt serve`).
    `engine="process"` runs the engine in a child process (`EngineProcess`), "thread" in a
    thread of this one (`EngineLoop`: one interpreter for HTTP and the engine)."""
    import torch

    from minirt import LLM
    from minirt.serve.engine_proc import EngineProcess

    if threads:
        torch.set_num_threads(threads)
    if engine == "process":
        loop = EngineProcess(model, max_waiting, threads, **engine_kwargs)
        loop.start()  # the model loads in the child; the app needs its path and limits
        app = build_app(loop, served_name(model), ChatTemplate(loop.model_path))
    elif engine == "thread":
        app = make_app(LLM(model, **engine_kwargs), served_name(model), max_waiting)
    else:
        raise ValueError(f"engine must be 'process' or 'thread', got {engine!r}")
    # What start-up built lives as long as the server: move it out of the garbage collector's
    # sight, so its full collections stay short pauses (vLLM does the same).
    gc.collect()
    gc.freeze()
    print(f"minirt serving {served_name(model)!r} at http://{host}:{port}/v1 (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
