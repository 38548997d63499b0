"""Moving bytes between an upstream and a client: opening the call, reading it, streaming it back.

Every function records the attempt exactly once (``Attempt.finish``), from the place that
knows how it ended; a client that goes away mid-stream is recorded with status 499.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson
from django.http import StreamingHttpResponse
from django.utils import timezone

from accounts.access import KeySnapshot
from accounts.limits import Admission
from channels_app import scheduler, transport
from channels_app.executors.base import UpstreamCall, UpstreamError, UpstreamTimeout, UpstreamUnreachable, classify
from channels_app.executors.registry import executor_for
from channels_app.transport import ReadError, ReadTimeout, UpstreamResponse
from gateway import ir
from gateway.client_dialects import Parser, Renderer
from gateway.errors import RelayError
from gateway.stream_start import opening_error
from usage.recorder import UsageEvent, record

log = logging.getLogger(__name__)
_NO_RULES: Mapping[str, Any] = MappingProxyType({})
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
    usage: ir.Usage | None = None
    captured: list[bytes] = field(default_factory=list)
    captured_size: int = 0
    finished: bool = False
    admission: Admission | None = None  # the key's limits, taken for this request
    keepalive: float = 0  # seconds of upstream silence before a keep-alive goes to the client
    bootstrap_left: int = 0  # streams that may still fail over after a 2xx (``streaming.bootstrap-retries``)
    number: int = 1  # 1 for the first upstream tried, 2 for the first failover, …
    payload_rules: Mapping[str, Any] = field(default_factory=lambda: _NO_RULES)  # applied to upstream bodies
    namespace: str = ""  # the URL's group namespace (``pro`` in ``/pro/v1/...``), if any
    group_id: int | None = None  # the explicit routing group the request was confined to

    def capture(self, chunk: bytes) -> None:
        if chunk and self.captured_size < _MAX_CAPTURE:
            self.captured.append(chunk)
            self.captured_size += len(chunk)

    def mark_first_byte(self) -> None:
        if not self.ttfb_ms:
            self.ttfb_ms = max(int((time.monotonic() - self.started) * 1000), 1)

    def track(self, events: list[ir.Event]) -> None:
        """Keep the usage the upstream reports, however it is spread over events."""
        for event in events:
            reported = event.usage if isinstance(event, (ir.Start, ir.UsageUpdate)) else None
            if reported is not None:
                self.usage = reported if self.usage is None else self.usage.merged(reported)

    def release(self) -> None:
        """Give back the key's concurrency slot, if this request holds one (idempotent)."""
        admission, self.admission = self.admission, None
        if admission is not None and admission.holds_slot:
            asyncio.get_running_loop().create_task(admission.release())

    def retry(self, route: scheduler.Route) -> None:
        """Start the next attempt of the same client request on ``route`` (after ``record``)."""
        self.number += 1
        self.route, self.finished, self.usage, self.ttfb_ms = route, False, None, 0
        self.captured, self.captured_size = [], 0
        self.started, self.started_at = time.monotonic(), timezone.now()

    def finish(self, status: int, error_type: str = "", error_message: str = "") -> None:
        """Give back the concurrency slot and queue this attempt's usage row (see ``record``)."""
        self.release()
        self.record(status, error_type, error_message)

    def record(self, status: int, error_type: str = "", error_message: str = "") -> None:
        """Queue this attempt's usage row (a non-blocking put); only the first call counts.

        A failure is recorded where it is understood best and then re-raised as a
        ``RelayError`` that the view would otherwise record again.
        """
        if self.finished:
            return
        self.finished = True
        usage = self.usage or ir.Usage()
        key, route = self.key, self.route
        record(
            UsageEvent(
                time=self.started_at,
                request_id=self.request_id,
                attempt=self.number,
                client_dialect=self.dialect,
                path=self.path,
                requested_model=self.model,
                stream=self.stream,
                status_code=status,
                team_id=key.team_id if key else None,
                api_key_id=key.id if key else None,
                key_display=key.display if key else "",
                group_id=self.group_id,
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
                total_tokens=usage.total,
                request_body=self.request_body,
                response_body=b"".join(self.captured),
            )
        )


async def send(call: UpstreamCall) -> UpstreamResponse:
    """Open the upstream response (headers read, body not yet), mapping transport failures."""
    try:
        return await transport.open_response(
            call.method, call.url, headers=call.headers, body=call.body, params=call.params, proxy_url=call.proxy_url
        )
    except transport.ConnectTimeout as exc:
        raise UpstreamTimeout(str(exc)) from None
    except transport.ConnectError as exc:
        raise UpstreamUnreachable(str(exc)) from None


class UpstreamFailed(RelayError):
    """An upstream call that failed before answering: ``error`` is what the scheduler judges it by."""

    def __init__(self, err: UpstreamError) -> None:
        retry_after = math.ceil(err.cooldown_s) if err.cooldown_s is not None else None
        super().__init__(
            err.status, err.message, code="upstream_error", error_type=err.error_type, retry_after=retry_after
        )
        self.error = err


class UpstreamRejection(UpstreamFailed):
    """An upstream error answer, with its raw body for same-dialect pass-through."""

    def __init__(self, err: UpstreamError, body: bytes, content_type: str) -> None:
        super().__init__(err)
        self.body, self.content_type = body, content_type
        self.upstream_status = err.upstream_status


async def open_call(attempt: Attempt, call: UpstreamCall) -> UpstreamResponse:
    """Send ``call``; on a transport failure or an error status, record the attempt (keeping the
    request's limits slot: the caller may try another channel) and raise ``UpstreamFailed``."""
    try:
        response = await send(call)
    except UpstreamError as err:
        attempt.record(err.status, err.error_type, err.message)
        raise UpstreamFailed(err) from None
    if response.status_code < 400:
        if attempt.bootstrap_left > 0 and response.headers.get("content-type", "").startswith("text/event-stream"):
            await _check_opening(attempt, response)
        return response
    body = await _read_quietly(response)
    attempt.capture(body)
    rejected = _classified(attempt, response.status_code, body, response)
    attempt.record(rejected.status, rejected.error_type, rejected.message)
    raise UpstreamRejection(rejected, body, response.headers.get("content-type", "application/json"))


async def _check_opening(attempt: Attempt, response: UpstreamResponse) -> None:
    """``streaming.bootstrap-retries`` (providers spec §14.3 step 4): a 2xx stream whose first event is
    an error, or that ends or breaks before its first event, fails like an error status, so another
    channel may answer: nothing has reached the client yet. Costs no time on a healthy stream (its
    first piece is what the client waits for anyway); the piece read stays the stream's first."""
    try:
        first = await response.peek()
        opening = opening_error(first) if first else (502, b'{"error":{"message":"empty upstream stream"}}')
    except ReadError as exc:
        timeout = isinstance(exc, ReadTimeout)
        opening = (504 if timeout else 502, orjson.dumps({"error": {"message": f"upstream stream broke: {exc}"}}))
        first = b""
    if opening is None:
        return
    attempt.bootstrap_left -= 1
    failed = _classified(attempt, *opening, response)
    await response.aclose()
    attempt.capture(first)
    attempt.record(failed.status, failed.error_type, failed.message)
    raise UpstreamFailed(failed)


def _classified(attempt: Attempt, status: int, body: bytes, response: UpstreamResponse) -> UpstreamError:
    """An upstream failure as the route's executor reads it (its provider's quota headers and bodies)."""
    executor = executor_for(attempt.route.channel.kind) if attempt.route else None
    if executor is None:
        return classify(status, body, response.headers.get("retry-after"))
    return executor.classify(status, body, response.headers)


async def _read_quietly(response: UpstreamResponse) -> bytes:
    try:
        return await response.aread()
    except ReadError:
        return b""
    finally:
        await response.aclose()


async def read_all(attempt: Attempt, response: UpstreamResponse) -> bytes:
    """The whole upstream body of a non-stream answer."""
    try:
        body = await response.aread()
    except ReadTimeout:
        attempt.finish(504, "timeout_error", "upstream timed out while answering")
        raise RelayError(504, "upstream timed out while answering", code="upstream_error") from None
    except ReadError as exc:
        attempt.finish(502, "upstream_error", f"upstream response cut off: {exc}")
        raise RelayError(502, "upstream response was cut off", code="upstream_error") from None
    finally:
        await response.aclose()
    attempt.mark_first_byte()
    attempt.capture(body)
    return body


async def read_events(attempt: Attempt, response: UpstreamResponse, parser: Parser) -> ir.Aggregator:
    """A streamed upstream answer folded into one response (for non-stream clients)."""
    aggregate = ir.Aggregator()
    try:
        async for chunk in response.aiter_raw():
            attempt.mark_first_byte()
            attempt.capture(chunk)
            events = parser.feed(chunk)
            attempt.track(events)
            aggregate.feed(events)
        events = parser.finish()
        attempt.track(events)
        aggregate.feed(events)
    except ReadTimeout:
        aggregate.error = ir.StreamError(504, "upstream timed out mid-answer", "timeout_error")
    except ReadError as exc:
        aggregate.error = ir.StreamError(502, f"upstream answer cut off: {exc or type(exc).__name__}", "upstream_error")
    finally:
        await response.aclose()
    return aggregate


SSE_KEEPALIVE = b": keep-alive\n\n"


async def upstream_chunks(response: UpstreamResponse, keepalive: float = 0) -> AsyncIterator[bytes | None]:
    """The upstream body as it arrives; with ``keepalive`` > 0, ``None`` after each quiet interval.

    The pending read is never cancelled by the timer (that would break the connection): the
    same read keeps running while the caller sends its keep-alive.
    """
    chunks = response.aiter_raw()
    if keepalive <= 0:
        async for chunk in chunks:
            yield chunk
        return
    iterator = chunks.__aiter__()
    pending: asyncio.Task[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=keepalive)
            if not done:
                yield None
                continue
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield chunk
    finally:
        if pending is not None and not pending.done():
            pending.cancel()


def streaming_response(body: AsyncIterator[bytes], content_type: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def pump_translated(
    attempt: Attempt,
    response: UpstreamResponse,
    parser: Parser,
    renderer: Renderer,
    keepalive: float = 0,
    ping: bytes = SSE_KEEPALIVE,
) -> AsyncGenerator[bytes, None]:
    """Upstream stream → IR events → the client's frames, as they arrive (``ping`` when quiet)."""
    outcome = _Outcome()
    try:
        async for chunk in upstream_chunks(response, keepalive):
            if chunk is None:
                yield ping
                continue
            attempt.mark_first_byte()
            out = _render(attempt, parser.feed(chunk), renderer, outcome)
            if out:
                attempt.capture(out)
                yield out
        out = _render(attempt, parser.finish(), renderer, outcome) + renderer.finish()
        outcome.completed()
        if out:
            attempt.capture(out)
            yield out
    except ReadError as exc:
        error = outcome.cut_off(exc)
        yield renderer.feed(error) + renderer.finish()
    finally:
        await response.aclose()
        attempt.finish(*outcome.result())


def _render(attempt: Attempt, events: list[ir.Event], renderer: Renderer, outcome: _Outcome) -> bytes:
    attempt.track(events)
    for event in events:
        if isinstance(event, ir.StreamError):
            outcome.failed(event)
        elif isinstance(event, ir.End):
            outcome.ended = True
    return b"".join([renderer.feed(event) for event in events])


async def pump_passthrough(
    attempt: Attempt,
    response: UpstreamResponse,
    parser: Parser,
    transform: Callable[[bytes], bytes] | None = None,
    tail: Callable[[], bytes] | None = None,
    keepalive: float = 0,
    ping: bytes = SSE_KEEPALIVE,
    error_frame: Callable[[ir.StreamError], bytes] | None = None,
) -> AsyncGenerator[bytes, None]:
    """Same-dialect stream: the upstream's bytes go out as they came (``transform`` aside);
    the family parser reads them only for usage and in-stream errors. ``error_frame`` tells the
    client, in its dialect, of a failure the upstream did not report itself (a cut-off, an end
    without a terminal event)."""
    outcome = _Outcome()
    try:
        async for chunk in upstream_chunks(response, keepalive):
            if chunk is None:
                yield ping
                continue
            attempt.mark_first_byte()
            _render(attempt, parser.feed(chunk), _NullRenderer, outcome)
            out = transform(chunk) if transform else chunk
            if out:
                attempt.capture(out)
                yield out
        reported = outcome.error
        _render(attempt, parser.finish(), _NullRenderer, outcome)
        outcome.completed()
        if error_frame is not None and reported is None and outcome.error is not None:
            yield error_frame(outcome.error)
        if tail is not None:
            yield tail()
    except ReadError as exc:
        error = outcome.cut_off(exc)
        if error_frame is not None and outcome.error is None:
            yield error_frame(error)
    finally:
        await response.aclose()
        attempt.finish(*outcome.result())


class _Null:
    def feed(self, event: ir.Event) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""


_NullRenderer = _Null()


class _Outcome:
    """How a stream ended, for its usage row; a client that left first is a 499."""

    def __init__(self) -> None:
        self.status, self.error_type, self.message = 499, "client_disconnected", "client closed the connection"
        self.ended = False
        self.error: ir.StreamError | None = None

    def failed(self, error: ir.StreamError) -> None:
        self.error = error

    def completed(self) -> None:
        if self.error is not None:
            self.status, self.error_type, self.message = (
                self.error.status,
                self.error.type or "upstream_error",
                self.error.message,
            )
        else:
            self.status, self.error_type, self.message = 200, "", ""

    def cut_off(self, exc: ReadError) -> ir.StreamError:
        timeout = isinstance(exc, ReadTimeout)
        status = 504 if timeout else 502
        message = (
            "upstream stream stalled past the read timeout"
            if timeout
            else f"upstream stream cut off: {exc or type(exc).__name__}"
        )
        self.status, self.error_type, self.message = status, "upstream_error", message
        return ir.StreamError(status, message, "timeout_error" if timeout else "upstream_error")

    def result(self) -> tuple[int, str, str]:
        if self.status == 499 and self.ended and self.error is None:
            # Everything reached the client; it hung up before the upstream closed its body.
            return 200, "", ""
        return self.status, self.error_type, self.message
