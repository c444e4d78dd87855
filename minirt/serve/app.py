"""The HTTP side: OpenAI's routes on FastAPI, answers built from the engine loop's token deltas.

A handler checks the request (400 in OpenAI's error schema), hands it to the engine loop (429 with
Retry-After when the queue is full), then either collects the answer or streams it as server-sent
events, one chunk per step. If the client goes away first, the request is aborted and its blocks
freed. Nothing escapes as a bare 500: an engine failure is an explicit error too. Notebook 03.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from minirt.serve.chat import ChatTemplate
from minirt.serve.detok import IncrementalText
from minirt.serve.engine_loop import (
    STEP_FIELDS,
    EngineLoop,
    Overloaded,
    ServeRequest,
    TokenDelta,
)
from minirt.serve.metrics import ServerMetrics
from minirt.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
    envelope,
    new_id,
    usage,
)


class Answer:
    """One request in flight on the HTTP side: its text so far and its token counts."""

    def __init__(self, engine: EngineLoop, req: ServeRequest) -> None:
        self.engine = engine
        self.req = req
        self.text = IncrementalText(engine.tokenizer, engine.eos_ids, req.params)
        self.finish_reason: str | None = None

    async def pieces(self) -> AsyncIterator[tuple[str, str | None]]:
        """(new text, finish_reason or None) per engine step, or per several steps when this
        stream fell behind the engine: what waits in the queue goes out as one chunk (vLLM's
        output collector merges the same way), so a busy server writes fewer, larger chunks
        instead of falling further behind. Aborts the request if left early."""
        try:
            while self.finish_reason is None:
                delta = await self.req.queue.get()
                while delta.finish_reason is None and not self.req.queue.empty():
                    more = self.req.queue.get_nowait()
                    delta = TokenDelta(delta.token_ids + more.token_ids, more.finish_reason,
                                       more.error)  # fmt: skip
                if delta.finish_reason == "error":
                    self.finish_reason = "error"
                    raise APIError(delta.error or "the engine failed", 500, kind="server_error")
                self.finish_reason = delta.finish_reason
                self.engine.http_chunks += 1
                yield (
                    self.text.add(delta.token_ids, delta.finish_reason is not None),
                    (delta.finish_reason),
                )
        finally:
            if self.finish_reason is None:  # cancelled: the client disconnected
                self.engine.abort(self.req)

    async def collect(self, request: Request) -> str:
        """The whole text; polls for a disconnect so a vanished client frees its blocks too."""

        async def drain() -> str:
            return "".join([text async for text, _ in self.pieces()])

        task = asyncio.ensure_future(drain())
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if not task.done() and await request.is_disconnected():
                task.cancel()
        return await task

    def usage(self) -> dict:
        return usage(len(self.req.prompt_token_ids), self.req.num_output_tokens)


def build_app(engine: EngineLoop, model_name: str, chat: ChatTemplate) -> FastAPI:
    metrics = ServerMetrics(engine)
    engine.on_finish = metrics.observe

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.close()

    app = FastAPI(title="minirt", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return await api_error(request, APIError(message, param=where or None))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, e: Overloaded) -> JSONResponse:
        error = APIError(str(e), 429, code="rate_limit_exceeded", kind="rate_limit_error")
        headers = {"Retry-After": str(e.retry_after_s)}
        return JSONResponse(error.body(), status_code=429, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        message = f"the server failed on this request: {type(e).__name__}: {e}"
        return await api_error(request, APIError(message, 500, kind="server_error"))

    def admit(body: SamplingFields, prompt, max_tokens: int | None) -> ServeRequest:
        if body.model != model_name:
            raise APIError(
                f"the model {body.model!r} does not exist; this server serves {model_name!r}",
                param="model",
                code="model_not_found",
            )
        try:
            ids, max_tokens = engine.encode(prompt, max_tokens)
        except ValueError as e:
            raise APIError(str(e), param="prompt") from None
        return engine.submit(ids, body.sampling_params(max_tokens))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        answer = Answer(engine, admit(body, body.one_prompt(), body.max_tokens))
        cid = new_id("cmpl")

        def choice(text: str, reason: str | None) -> dict:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}

        if body.stream:
            chunks = (
                envelope(cid, "text_completion", model_name, [choice(text, reason)])
                async for text, reason in answer.pieces()
            )
            return _sse(chunks, answer, body, cid, "text_completion", model_name)
        text = await answer.collect(request)
        out = envelope(cid, "text_completion", model_name, [choice(text, answer.finish_reason)])
        return {**out, "usage": answer.usage()}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        answer = Answer(engine, admit(body, chat.render(messages), body.token_limit))
        cid = new_id("chatcmpl")
        kind = "chat.completion.chunk"

        def delta(text: str, reason: str | None) -> dict:
            return {"index": 0, "delta": {"content": text}, "finish_reason": reason}

        if body.stream:

            async def chunks():
                first = {"index": 0, "delta": {"role": "assistant", "content": ""}}
                yield envelope(cid, kind, model_name, [{**first, "finish_reason": None}])
                async for text, reason in answer.pieces():
                    yield envelope(cid, kind, model_name, [delta(text, reason)])

            return _sse(chunks(), answer, body, cid, kind, model_name)
        text = await answer.collect(request)
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": answer.finish_reason}
        out = envelope(cid, "chat.completion", model_name, [choice])
        return {**out, "usage": answer.usage()}

    @app.get("/v1/models")
    async def models():
        card = {"id": model_name, "object": "model", "created": 0, "owned_by": "minirt"}
        return {"object": "list", "data": [{**card, "max_model_len": engine.max_model_len}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", **engine.snapshot.to_dict()}

    @app.get("/steps")
    async def steps(since: int = 0):
        """minirt's own endpoint: the engine's step log after the `since`-th step, as rows of
        [end_s, ms, prefill_tokens, decodes, context_tokens] (the serving simulator's data);
        end_s counts from t0_s, the engine's start on this machine's perf_counter() clock."""
        total, rows = engine.steps_since(since)
        steps = [r.to_list() for r in rows]
        # the HTTP side's CPU seconds so far and the chunks it streamed (its costs, for the
        # simulator's front end); only an engine in a process of its own leaves this process
        # to HTTP
        http_cpu = time.process_time() if engine.separate_process else None
        return {"next": total, "fields": STEP_FIELDS, "steps": steps, "t0_s": engine.t0,
                "http_cpu_s": http_cpu, "http_chunks": engine.http_chunks}  # fmt: skip

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    return app


def _sse(chunks, answer: Answer, body: SamplingFields, cid: str, kind: str, model: str):
    """Server-sent events: each chunk, the usage chunk if asked for, then [DONE]; an engine
    failure mid-stream becomes an error event (the status line has already gone out)."""

    async def events():
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            if body.include_usage:
                last = {**envelope(cid, kind, model, []), "usage": answer.usage()}
                yield f"data: {json.dumps(last)}\n\n"
        except APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
