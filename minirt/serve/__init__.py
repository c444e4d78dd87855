"""Serving: an OpenAI-compatible HTTP server on the engine (`python -m minirt serve`).

`EngineLoop` runs the engine in one thread for many requests; `build_app` is the FastAPI app;
`ServerThread` starts it on a free port for tests and the load generator. Notebook 03.
"""

from minirt.serve.engine_loop import EngineLoop, Overloaded, ServeRequest, TokenDelta

__all__ = ["EngineLoop", "Overloaded", "ServeRequest", "TokenDelta"]
