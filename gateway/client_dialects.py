"""The four client dialects as the relay sees them over HTTP.

Each ``ClientDialect`` knows how its clients send a request (body, model, stream flag), how
to turn it into the IR, which stream renderer answers it, and how its errors look. The
translation itself lives in ``gateway.dialects``; this module is the thin HTTP-facing layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import orjson
from django.http import HttpRequest, HttpResponse

from gateway import ir
from gateway.dialects import (
    anthropic_messages,
    anthropic_stream,
    gemini,
    gemini_stream,
    openai_chat,
    openai_chat_stream,
    openai_responses,
    openai_responses_stream,
)
from gateway.errors import RelayError
from usage.models import Dialect


class Renderer(Protocol):
    def feed(self, event: ir.Event) -> bytes: ...

    def finish(self) -> bytes: ...


class Parser(Protocol):
    def feed(self, chunk: bytes) -> list[ir.Event]: ...

    def finish(self) -> list[ir.Event]: ...


def _as_bytes(body: bytes | dict[str, Any]) -> bytes:
    return body if isinstance(body, bytes) else orjson.dumps(body)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A client request, decoded: the JSON body, the model it names and whether it streams."""

    payload: dict[str, Any]
    model: str
    stream: bool
    sse: bool = True  # Gemini streams without ?alt=sse are one JSON array
    betas: tuple[str, ...] = ()
    codex_client: bool = False
    edited: bool = False  # the payload is no longer the client's bytes (a key's system prompt was added)


@dataclass(frozen=True, slots=True)
class ClientDialect:
    """One client-facing wire format."""

    name: str  # a usage.models.Dialect value, for the request log
    family: str  # the upstream family spoken natively (same-dialect pass-through)
    module: ModuleType
    stream_module: ModuleType
    content_type: str = "text/event-stream"
    parse: Callable[[Incoming], ir.Request] = lambda incoming: ir.Request(model=incoming.model)

    def error_body(self, status: int, message: str, code: str | None) -> bytes:
        return _as_bytes(self.module.error_body(status, message, code))

    def error_response(self, err: RelayError, *, upstream: bool = False) -> HttpResponse:
        """``err`` in this dialect's envelope; an ``upstream`` refusal gets the envelope's own code for
        its status (OpenAI ``rate_limit_exceeded``, Google ``RESOURCE_EXHAUSTED`` …), not the relay's."""
        code = None if upstream else err.code
        body = self.error_body(err.status, err.message, code)
        if err.details:
            body = _with_details(body, err.details)
        response = HttpResponse(body, status=err.status)
        response["Content-Type"] = "application/json"
        if err.retry_after is not None:
            response["Retry-After"] = str(max(err.retry_after, 1))
        response["X-Relay-Error-Code"] = err.code
        return response

    def renderer(self, req: ir.Request, incoming: Incoming, input_estimate: int = 0) -> Renderer:
        if self.family == "claude":
            return anthropic_stream.StreamRenderer(req, input_tokens_estimate=input_estimate)
        if self.family == "gemini":
            return gemini_stream.StreamRenderer(req, sse=incoming.sse)
        if self.family == "responses":
            return openai_responses_stream.StreamRenderer(req, codex_client=incoming.codex_client)
        return openai_chat_stream.StreamRenderer(req)

    def ping(self, incoming: Incoming) -> bytes:
        """A keep-alive this dialect's stream parsers skip."""
        if self.family == "claude":
            return b'event: ping\ndata: {"type": "ping"}\n\n'
        if self.family == "gemini" and not incoming.sse:
            return b"\n"  # whitespace between JSON array elements
        return b": keep-alive\n\n"

    def render_response(self, resp: ir.Response, req: ir.Request) -> bytes:
        return orjson.dumps(self.module.render_response(resp, req))


def _with_details(body: bytes, details: dict[str, object]) -> bytes:
    """``details`` added to the envelope's error object (the first, for Gemini's array form)."""
    envelope = orjson.loads(body)
    target = envelope[0] if isinstance(envelope, list) and envelope else envelope
    error = target.get("error") if isinstance(target, dict) else None
    if not isinstance(error, dict):
        return body
    for name, value in details.items():
        error.setdefault(name, value)
    return orjson.dumps(envelope)


OPENAI_CHAT = ClientDialect(
    name=Dialect.OPENAI_CHAT,
    family="openai",
    module=openai_chat,
    stream_module=openai_chat_stream,
    parse=lambda incoming: openai_chat.parse_request(incoming.payload),
)
OPENAI_RESPONSES = ClientDialect(
    name=Dialect.OPENAI_RESPONSES,
    family="responses",
    module=openai_responses,
    stream_module=openai_responses_stream,
    parse=lambda incoming: openai_responses.parse_request(incoming.payload),
)
ANTHROPIC = ClientDialect(
    name=Dialect.ANTHROPIC_MESSAGES,
    family="claude",
    module=anthropic_messages,
    stream_module=anthropic_stream,
    parse=lambda incoming: anthropic_messages.parse_request(incoming.payload, betas=incoming.betas),
)
GEMINI = ClientDialect(
    name=Dialect.GEMINI,
    family="gemini",
    module=gemini,
    stream_module=gemini_stream,
    parse=lambda incoming: gemini.parse_request(incoming.payload, incoming.model, stream=incoming.stream),
)

# The upstream side: the module that renders requests for, and parses answers from, each family.
FAMILY_MODULES: dict[str, ModuleType] = {
    "openai": openai_chat,
    "responses": openai_responses,
    "claude": anthropic_messages,
    "gemini": gemini,
}
FAMILY_PARSERS: dict[str, Callable[[ir.Request | None], Parser]] = {
    "openai": openai_chat_stream.StreamParser,
    "responses": openai_responses_stream.StreamParser,
    "claude": anthropic_stream.StreamParser,
    "gemini": gemini_stream.StreamParser,
}


def header_betas(request: HttpRequest) -> tuple[str, ...]:
    """The ``anthropic-beta`` values a Claude client sent (comma-separated, possibly repeated)."""
    raw = request.headers.get("anthropic-beta", "")
    return tuple(b.strip() for b in raw.split(",") if b.strip())


def is_codex_client(request: HttpRequest) -> bool:
    agent = request.headers.get("user-agent", "").lower()
    return agent.startswith("codex") or request.headers.get("originator", "").lower().startswith("codex")
