"""The OpenAI wire format: request bodies, the sampling they ask for, and the error schema.

Requests are pydantic models, so a wrong type is refused before it reaches the engine; the
sampling fields become a `SamplingParams`, whose own checks name the bad value. Every refusal is
OpenAI's `{"error": {"message", "type", "param", "code"}}` with status 400 (429 when full).
`top_k` and `ignore_eos` are vLLM's extensions, which load generators use. Notebook 03.
"""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel, ConfigDict, Field

from minirt.sampling_params import SamplingParams


class APIError(Exception):
    """An answer in OpenAI's error schema; raised anywhere a handler refuses a request."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return {"error": error}


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    # Unknown fields are ignored, as vLLM does: clients send fields a small server does not use.
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    n: int = 1
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        if self.n != 1:
            raise APIError(f"n must be 1 (one choice per request), got {self.n}", param="n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) != 0.0:
                raise APIError(f"{name} is not supported; leave it at 0", param=name)
        try:
            return SamplingParams(
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                max_tokens=max_tokens,
                stop=self.stop or [],
                seed=self.seed,
                ignore_eos=self.ignore_eos,
            )
        except ValueError as e:
            raise APIError(str(e)) from None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(SamplingFields):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for completions
    echo: bool = False

    def one_prompt(self) -> str | list[int]:
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], str | list):
            if len(p) != 1:
                raise APIError("send one prompt per request (got a batch)", param="prompt")
            p = p[0]
        if self.echo:
            raise APIError("echo is not supported", param="echo")
        return p


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = [p.get("text", "") for p in self.content if p.get("type") == "text"]
        if len(parts) != len(self.content):
            raise APIError("only text content parts are supported", param="messages")
        return "".join(parts)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)  # None: up to the context length
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    total = prompt_tokens + completion_tokens
    counts = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    return {**counts, "total_tokens": total}


def envelope(id_: str, obj: str, model: str, choices: list, created: int | None = None) -> dict:
    created = int(time.time()) if created is None else created
    return {"id": id_, "object": obj, "created": created, "model": model, "choices": choices}
