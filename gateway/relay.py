"""One request's path: key → route → translate → execute → back → record.

Before the first byte: one key lookup (cached), the routing table (in memory), one upstream
call. While streaming: bytes in, bytes out, usage read on the way. In the generator's
``finally`` one usage event is queued for the recorder, partial usage included, with status
499 when the client went away.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils import timezone

from accounts.access import KeySnapshot, aresolve_api_key
from channels_app import scheduler, transport
from channels_app.executors.base import UpstreamCall, UpstreamError, UpstreamTimeout, UpstreamUnreachable, classify
from channels_app.executors.registry import executor_for
from gateway.dialects import openai_chat
from gateway.errors import RelayError
from gateway.ir import Usage
from usage.models import Dialect
from usage.recorder import UsageEvent, record

log = logging.getLogger(__name__)
_MAX_CAPTURE = 1024 * 1024  # response bytes kept for the log, per attempt


@dataclass(slots=True)
class Attempt:
    """What one request has learned so far; becomes its usage event."""

    dialect: str
    path: str
    started: float = field(default_factory=time.monotonic)
    started_at: Any = field(default_factory=timezone.now)
    request_id: uuid.UUID = field(default_factory=uuid.uuid4)
    key: KeySnapshot | None = None
    route: scheduler.Route | None = None
    model: str = ""
    stream: bool = False
    request_body: bytes = b""
    ttfb_ms: int = 0
    usage: Usage | None = None
    captured: list[bytes] = field(default_factory=list)
    captured_size: int = 0
    finished: bool = False

    def capture(self, chunk: bytes) -> None:
        if self.captured_size < _MAX_CAPTURE:
            self.captured.append(chunk)
            self.captured_size += len(chunk)

    def mark_first_byte(self) -> None:
        if not self.ttfb_ms:
            self.ttfb_ms = max(int((time.monotonic() - self.started) * 1000), 1)

    def finish(self, status: int, error_type: str = "", error_message: str = "") -> None:
        """Queue this attempt's usage row (a non-blocking put); only the first call counts.

        A failure is recorded where it is understood best (``_open``, ``_once``) and then
        re-raised as a ``RelayError`` that the view would record again.
        """
        if self.finished:
            return
        self.finished = True
        usage = self.usage or Usage()
        key, route = self.key, self.route
        record(
            UsageEvent(
                time=self.started_at,
                request_id=self.request_id,
                client_dialect=self.dialect,
                path=self.path,
                requested_model=self.model,
                stream=self.stream,
                status_code=status,
                team_id=key.team_id if key else None,
                api_key_id=key.id if key else None,
                key_display=key.display if key else "",
                channel_id=route.channel.id if route else None,
                channel_name=route.channel.name if route else "",
                upstream_kind=route.channel.kind if route else "",
                upstream_model=route.upstream_model if route else "",
                error_type=error_type,
                error_message=error_message,
                latency_ms=max(int((time.monotonic() - self.started) * 1000), 1),
                ttfb_ms=self.ttfb_ms,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                total_tokens=usage.total_tokens,
                request_body=self.request_body,
                response_body=b"".join(self.captured),
            )
        )


def error_response(err: RelayError) -> HttpResponse:
    """A ``RelayError`` in the OpenAI envelope."""
    response = HttpResponse(
        openai_chat.error_body(err.message, err.error_type, err.code),
        status=err.status,
        content_type="application/json",
    )
    if err.retry_after is not None:
        response["Retry-After"] = str(err.retry_after)
    return response


async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    """``POST /v1/chat/completions``."""
    attempt = Attempt(dialect=Dialect.OPENAI_CHAT, path=request.path)
    try:
        attempt.key = await aresolve_api_key(request)
        payload = _read_body(request, attempt)
        attempt.model, attempt.stream = payload["model"], bool(payload.get("stream"))
        if not attempt.key.allows_model(attempt.model):
            raise RelayError(403, f"model '{attempt.model}' is not allowed for this API key", code="model_not_allowed")
        attempt.route = route = scheduler.choose(await scheduler.table(), attempt.key, attempt.model)
        executor = executor_for(route.channel.kind)
        assert executor is not None  # the routing table holds only kinds with an executor
        body = openai_chat.upstream_body(payload, attempt.request_body, route.upstream_model)
        call = executor.build(route, body, attempt.stream)
        if attempt.stream:
            return await _stream(attempt, call, openai_chat.wants_stream_usage(payload))
        return await _once(attempt, call)
    except RelayError as err:
        if attempt.key is not None and err.status not in (401, 403, 404):
            attempt.finish(err.status, err.code, err.message)
        return error_response(err)


def _read_body(request: HttpRequest, attempt: Attempt) -> dict[str, Any]:
    try:
        attempt.request_body = request.body
    except RequestDataTooBig:
        raise RelayError(
            413, f"request body exceeds {settings.CLIRELAY_MAX_BODY_BYTES} bytes", code="request_too_large"
        ) from None
    try:
        return openai_chat.read_body(attempt.request_body)
    except openai_chat.BadRequest as exc:
        raise RelayError(400, str(exc), code="invalid_request") from None


async def _send(call: UpstreamCall) -> httpx.Response:
    """Open the upstream response (headers read, body not yet), mapping transport failures."""
    client = transport.client_for(call.proxy_url)
    request = client.build_request(call.method, call.url, headers=call.headers, content=call.body, params=call.params)
    try:
        return await client.send(request, stream=True)
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"upstream timed out: {type(exc).__name__}") from None
    except httpx.HTTPError as exc:
        raise UpstreamUnreachable(f"upstream unreachable: {exc or type(exc).__name__}") from None


async def _open(attempt: Attempt, call: UpstreamCall) -> httpx.Response:
    """Send ``call``; on an upstream error status, record the failure and raise it as a RelayError."""
    try:
        response = await _send(call)
        if response.status_code >= 400:
            body = await response.aread()
            await response.aclose()
            attempt.capture(body)
            raise classify(response.status_code, body, response.headers.get("retry-after"))
    except UpstreamError as err:
        attempt.finish(err.status, err.error_type, err.message)
        retry_after = int(err.cooldown_s) if err.cooldown_s is not None else None
        raise RelayError(
            err.status, err.message, code="upstream_error", error_type=err.error_type, retry_after=retry_after
        ) from None
    return response


async def _once(attempt: Attempt, call: UpstreamCall) -> HttpResponse:
    response = await _open(attempt, call)
    try:
        body = await response.aread()
    except httpx.HTTPError as exc:
        attempt.finish(502, "upstream_error", f"upstream response cut off: {exc}")
        raise RelayError(502, "upstream response was cut off", code="upstream_error") from None
    finally:
        await response.aclose()
    attempt.mark_first_byte()
    attempt.capture(body)
    try:
        attempt.usage = openai_chat.usage_from(orjson.loads(body).get("usage"))
    except (orjson.JSONDecodeError, AttributeError):
        log.warning(
            "upstream %s returned a body that is not a JSON object", attempt.route and attempt.route.channel.name
        )
    attempt.finish(response.status_code)
    return HttpResponse(body, status=response.status_code, content_type="application/json")


async def _stream(attempt: Attempt, call: UpstreamCall, client_wants_usage: bool) -> HttpResponseBase:
    response = await _open(attempt, call)
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        # Some upstreams answer a stream request with one JSON body; pass it on as it came.
        return await _once_from_open(attempt, response)
    relay = openai_chat.StreamRelay(client_wants_usage)
    streaming = StreamingHttpResponse(_pump(attempt, response, relay), content_type="text/event-stream")
    streaming["Cache-Control"] = "no-cache"
    streaming["X-Accel-Buffering"] = "no"
    return streaming


async def _once_from_open(attempt: Attempt, response: httpx.Response) -> HttpResponse:
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    attempt.mark_first_byte()
    attempt.capture(body)
    attempt.finish(response.status_code)
    return HttpResponse(body, status=response.status_code, content_type=response.headers.get("content-type"))


async def _pump(attempt: Attempt, response: httpx.Response, relay: openai_chat.StreamRelay) -> AsyncIterator[bytes]:
    """Forward upstream SSE events as they arrive; record exactly one usage event at the end.

    A client that hangs up once ``[DONE]`` reached it (the SDKs close at ``[DONE]``, often
    before the upstream ends its body) got the whole answer: that is a 200, not a 499.
    """
    status, error_type, message = 499, "client_disconnected", "client closed the connection"
    done_delivered = False
    try:
        async for chunk in response.aiter_raw():
            attempt.mark_first_byte()
            out = relay.feed(chunk)
            if out:
                attempt.capture(out)
                yield out
                done_delivered = relay.saw_done
        out = relay.finish()
        if out:
            yield out
        status, error_type, message = 200, "", ""
        if relay.upstream_error is not None:
            status, error_type = 502, "upstream_error"
            message = str(relay.upstream_error.get("message", "upstream error in stream"))
    except httpx.HTTPError as exc:
        status, error_type = 502, "upstream_error"
        message = f"upstream stream cut off: {exc or type(exc).__name__}"
        yield openai_chat.stream_error_event(message, "upstream_error", "upstream_error")
    finally:
        if status == 499 and done_delivered:
            status, error_type, message = 200, "", ""
        attempt.usage = relay.usage
        await response.aclose()
        attempt.finish(status, error_type, message)
