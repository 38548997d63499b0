"""One request's path: key → route → translate → execute → back → record.

Before the first byte: one key lookup (cached), the routing table (in memory), one upstream
call. When the client's dialect is the upstream's family the body passes through with only the
model and the family's sanitising changed; otherwise it goes through the IR
(``B.render_request(A.parse_request(body))``) and the answer comes back the same way. While
streaming: bytes in, bytes out. Each attempt queues one usage event for the recorder.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from typing import Any, NamedTuple

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from accounts import limits
from accounts.access import KeySnapshot, aresolve_api_key
from channels_app import cooldowns, scheduler
from channels_app.executors.base import Executor
from channels_app.executors.registry import executor_for
from channels_app.transport import ReadError, ReadTimeout, UpstreamResponse
from gateway import ir, media, payload_rules, system_prompt, thinking, tokens
from gateway.client_dialects import (
    FAMILY_MODULES,
    FAMILY_PARSERS,
    GEMINI,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    ClientDialect,
    Incoming,
    header_betas,
    is_codex_client,
)
from gateway.dialects import (
    BadRequest,
    anthropic_messages,
    gemini,
    openai_chat,
    openai_responses,
    openai_responses_stream,
)
from gateway.errors import RelayError
from gateway.pumps import (
    SSE_KEEPALIVE,
    Attempt,
    UpstreamFailed,
    UpstreamRejection,
    open_call,
    pump_passthrough,
    pump_translated,
    read_all,
    read_events,
    streaming_response,
    upstream_chunks,
)

log = logging.getLogger(__name__)
_OPENAI_FAMILY = frozenset({"openai", "responses"})


def error_response(err: RelayError) -> HttpResponse:
    """A ``RelayError`` in the OpenAI envelope (endpoints that are OpenAI-only)."""
    return OPENAI_CHAT.error_response(err)


class Streamed(NamedTuple):
    """A stream on its way to the client: the body as it is produced, and its content type."""

    body: AsyncGenerator[bytes, None]
    content_type: str


async def handle(
    request: HttpRequest, client: ClientDialect, *, path_model: str = "", action: str = ""
) -> HttpResponseBase:
    """Serve one generation request in ``client``'s dialect."""
    attempt = Attempt(dialect=client.name, path=request.path, namespace=namespace_of(request))
    served: HttpResponseBase | Streamed | None = None
    try:
        attempt.key = await aresolve_api_key(request)
        incoming = _incoming(request, client, attempt, path_model, action)
        served = await _serve(attempt, client, incoming)
        return streaming_response(*served) if isinstance(served, Streamed) else served
    except UpstreamRejection as err:
        return _rejection(client, err, same_family=attempt.route is not None and _same_family(client, attempt))
    except RelayError as err:
        if attempt.key is not None and err.status not in (401, 403, 404) and not is_limit(err):
            attempt.finish(err.status, err.code, err.message)
        return client.error_response(err)
    except (BadRequest, thinking.ThinkingError) as exc:
        return client.error_response(RelayError(400, str(exc), code="invalid_request"))
    except asyncio.CancelledError:
        # The client hung up while an upstream was working on its answer: that call is a 499 row.
        if attempt.route is not None and not attempt.finished:
            attempt.finish(499, "client_disconnected", "client closed the connection before the answer")
        raise
    finally:
        if not isinstance(served, Streamed):
            attempt.release()  # a stream gives its slot back when it ends


def is_limit(err: RelayError) -> bool:
    """A refusal by the key's own limits: nothing reached an upstream, so nothing is logged."""
    return err.status == 429 and err.code.endswith(("_exceeded", "_exhausted"))


async def open_stream(
    key: KeySnapshot,
    incoming: Incoming,
    *,
    path: str,
    client: ClientDialect = OPENAI_RESPONSES,
    namespace: str = "",
) -> AsyncGenerator[bytes, None]:
    """One streamed generation for a caller that is not an HTTP view (the Responses WebSocket).

    Routing, translation and recording are ``handle``'s. A failure before the first byte raises a
    ``RelayError`` (recorded when an upstream was tried); otherwise the iterator yields the client
    dialect's SSE bytes and records the attempt when it ends or is closed.
    """
    attempt = Attempt(
        dialect=client.name, path=path, key=key, request_body=orjson.dumps(incoming.payload), namespace=namespace
    )
    try:
        served = await _serve(attempt, client, replace(incoming, stream=True))
    except RelayError as err:
        if err.status not in (401, 403, 404) and not is_limit(err):
            attempt.finish(err.status, err.code, err.message)
        attempt.release()
        raise
    except (BadRequest, thinking.ThinkingError) as exc:
        attempt.release()
        raise RelayError(400, str(exc), code="invalid_request") from None
    if not isinstance(served, Streamed):  # only an OpenAI upstream that ignored stream: true does this
        attempt.finish(502, "upstream_error", "upstream did not stream")
        raise RelayError(502, "the upstream answered without streaming", code="upstream_error")
    return served.body


async def _serve(attempt: Attempt, client: ClientDialect, incoming: Incoming) -> HttpResponseBase | Streamed:
    """Route ``incoming`` and call upstreams until one answers (see ``_failover``)."""
    key = attempt.key
    assert key is not None
    attempt.model, attempt.stream = incoming.model, incoming.stream
    base_model, suffix = _check_model(attempt, incoming.model)
    if key.system_prompt:
        payload = system_prompt.inject(client.family, incoming.payload, key.system_prompt)
        incoming = replace(incoming, payload=payload, edited=True)
    table = await scheduler.table()
    attempt.keepalive = table.keepalive_seconds
    attempt.bootstrap_left = table.bootstrap_retries
    attempt.payload_rules = table.payload_rules
    scope = route_scope(table, key, attempt.namespace)
    attempt.group_id = scope.group_id if scope else None
    routes = scheduler.candidates(table, key, base_model, group=scope)
    if not routes:  # nothing excluded yet, so candidates() raised instead; kept for the contract
        raise RelayError(404, f"The model '{base_model}' is not available.", code="model_not_found")
    # Limits last: a request refused for its key, model or route consumes no quota (D2).
    attempt.admission = await limits.admit(key, str(attempt.request_id))
    target = _Target(table, base_model, scope)
    return await _failover(attempt, routes, target, lambda: _attempt(attempt, client, incoming, suffix))


class _Target(NamedTuple):
    """What a retry round needs to ask the scheduler again."""

    table: scheduler.RoutingTable
    model: str
    scope: scheduler.GroupScope | None


async def _failover(
    attempt: Attempt,
    routes: list[scheduler.Route],
    target: _Target,
    call: Callable[[], Awaitable[HttpResponseBase | Streamed]],
) -> HttpResponseBase | Streamed:
    """Try ``routes`` in order until one answers (providers spec §14.3, management D12).

    A failure cools its (channel, model) down; the request's own fault (400, 413, context too
    long…) stops at once. When a round has tried every candidate, another starts only after a
    403, 408, 429 or 5xx, at most ``request-retry`` times, after waiting for the first cooling
    channel when that wait is within ``max-retry-interval``. Nothing has reached the client yet:
    a stream is committed once its upstream has answered 2xx.
    """
    key = attempt.key
    assert key is not None
    rounds = 0
    while True:
        failure: UpstreamFailed | None = None
        for route in _capped(routes, target.table.max_retry_credentials):
            if attempt.finished:  # an earlier attempt of this request is in the log
                attempt.retry(route)
            else:
                attempt.route = route
            try:
                served = await call()
            except UpstreamFailed as err:
                failure = err
                await cooldowns.amark_failure(route, err.error)
                if cooldowns.is_request_scoped(err.error):
                    raise
                log.info("attempt %d on channel %s failed (%s)", attempt.number, route.channel.name, err.status)
                continue
            await cooldowns.amark_success(route)
            return served
        assert failure is not None
        rounds += 1
        if rounds > target.table.request_retry or _round_status(failure) not in _RETRY_ROUND_STATUSES:
            raise failure
        wait = scheduler.soonest_cooldown(target.table, key, target.model, group=target.scope)
        if wait is not None:
            if wait > target.table.max_retry_interval:  # 0: never wait
                raise failure
            await asyncio.sleep(wait)
        try:
            routes = scheduler.candidates(target.table, key, target.model, group=target.scope)
        except RelayError:
            raise failure from None
        if not routes:
            raise failure


_RETRY_ROUND_STATUSES = frozenset({403, 408, 429, 500, 502, 503, 504})


def _round_status(failure: UpstreamFailed) -> int:
    return failure.error.upstream_status or failure.error.status


def _capped(routes: list[scheduler.Route], cap: int) -> list[scheduler.Route]:
    return routes[:cap] if cap > 0 else routes


async def _attempt(
    attempt: Attempt, client: ClientDialect, incoming: Incoming, suffix: ir.Thinking | None
) -> HttpResponseBase | Streamed:
    """One upstream call on ``attempt.route``: same dialect passes through, others go through the IR."""
    route = attempt.route
    assert route is not None
    executor = executor_for(route.channel.kind)
    assert executor is not None  # the routing table holds only kinds with an executor
    if executor.family == client.family and suffix is None:
        return await _passthrough(attempt, client, incoming, executor)
    return await _translated(attempt, client, incoming, executor, suffix)


def _same_family(client: ClientDialect, attempt: Attempt) -> bool:
    route = attempt.route
    executor = executor_for(route.channel.kind) if route else None
    return executor is not None and executor.family == client.family


def _rejection(client: ClientDialect, err: UpstreamRejection, *, same_family: bool) -> HttpResponse:
    """An upstream's refusal: its own body when it speaks the client's dialect and the fault is the
    client's (400, 404, 413, 422, 429); otherwise its message in the client's envelope."""
    if same_family and err.body and err.upstream_status in (400, 404, 409, 413, 422, 429):
        response = HttpResponse(err.body, status=err.upstream_status, content_type=err.content_type)
        if err.retry_after is not None:
            response["Retry-After"] = str(max(err.retry_after, 1))
        return response
    return client.error_response(err, upstream=True)


def _check_model(attempt: Attempt, model: str) -> tuple[str, ir.Thinking | None]:
    assert attempt.key is not None
    if not attempt.key.allows_model(model):
        raise RelayError(403, f"model '{model}' is not allowed for this API key", code="model_not_allowed")
    return thinking.parse_suffix(model)


def namespace_of(request: HttpRequest) -> str:
    """The URL namespace before ``/v1`` or ``/v1beta`` (``pro`` in ``/pro/v1/...``), or ""."""
    return str(getattr(request, "route_namespace", ""))


def route_scope(table: scheduler.RoutingTable, key: KeySnapshot, namespace: str) -> scheduler.GroupScope | None:
    """The group a namespaced URL confines the request to, resolved within the key's team (D16)."""
    if not namespace:
        return None
    scope = scheduler.resolve_group(table, key.team_id, namespace)
    if scope is None:
        raise RelayError(404, "channel group route not found", code="route_group_unavailable")
    if not scheduler.group_allowed(key, scope):
        raise RelayError(
            403,
            "channel group is not allowed for this API key",
            code="channel_group_forbidden",
            details={"group": scope.name},
        )
    return scope


def read_raw(request: HttpRequest, attempt: Attempt) -> bytes:
    """The request body, kept on ``attempt`` for the log; 413 past ``CLIRELAY_MAX_BODY_BYTES``."""
    try:
        attempt.request_body = request.body
    except RequestDataTooBig:
        raise RelayError(
            413, f"request body exceeds {settings.CLIRELAY_MAX_BODY_BYTES} bytes", code="request_too_large"
        ) from None
    return attempt.request_body


def json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object, or ``BadRequest`` saying what it is instead."""
    if not raw:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    return payload


def _incoming(request: HttpRequest, client: ClientDialect, attempt: Attempt, path_model: str, action: str) -> Incoming:
    """Decode the request: body, model and stream flag, wherever this dialect keeps them."""
    raw = read_raw(request, attempt)
    if client is OPENAI_CHAT:
        payload = openai_chat.read_body(raw)
        return Incoming(payload, payload["model"], bool(payload.get("stream")))
    payload = json_object(raw)
    if client is GEMINI:
        model = gemini.strip_models_prefix(path_model)
        return Incoming(payload, model, action == "streamGenerateContent", sse=request.GET.get("alt") == "sse")
    named = payload.get("model")
    if not isinstance(named, str) or not named.strip():
        raise BadRequest("'model' is required and must be a non-empty string")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean")
    return Incoming(payload, named, stream, betas=header_betas(request), codex_client=is_codex_client(request))


# --- same dialect: pass-through -------------------------------------------------------------


async def _passthrough(
    attempt: Attempt, client: ClientDialect, incoming: Incoming, executor: Executor
) -> HttpResponseBase | Streamed:
    route = attempt.route
    assert route is not None
    family, upstream_model = executor.family, route.upstream_model
    betas: list[str] = []
    if family == "openai":
        raw = orjson.dumps(incoming.payload) if incoming.edited else attempt.request_body
        body = openai_chat.upstream_body(incoming.payload, raw, upstream_model)
    elif family == "claude":
        sanitized, betas = anthropic_messages.sanitize_passthrough(incoming.payload, upstream_model, incoming.betas)
        body = orjson.dumps(sanitized)
    elif family == "gemini":
        body = orjson.dumps(gemini.normalize_request(incoming.payload))
    else:
        body = orjson.dumps(openai_responses.codex_body(incoming.payload, upstream_model))
    upstream_stream = incoming.stream or executor.always_stream
    body = _with_payload_rules(attempt, family, body)
    response = await open_call(attempt, executor.build(route, body, upstream_stream, betas=betas))
    if family == "openai":
        return await _openai_passthrough(attempt, incoming, response)
    parser = FAMILY_PARSERS[family](None)
    if incoming.stream:
        if family == "gemini" and not incoming.sse:
            array = _SseToJsonArray()
            return Streamed(
                pump_passthrough(
                    attempt,
                    response,
                    parser,
                    array.feed,
                    array.finish,
                    attempt.keepalive,
                    client.ping(incoming),
                    error_frame=array.error,
                ),
                "application/json",
            )
        if isinstance(parser, openai_responses.StreamParser):
            framer = openai_responses_stream.PassthroughFramer()
            errors = _responses_error_frame(parser, incoming, framer)
            pump = pump_passthrough(
                attempt, response, parser, framer.feed, framer.finish, attempt.keepalive, client.ping(incoming), errors
            )
        else:
            pump = pump_passthrough(
                attempt,
                response,
                parser,
                keepalive=attempt.keepalive,
                ping=client.ping(incoming),
                error_frame=lambda error: client.module.stream_error(error.status, error.message),
            )
        return Streamed(pump, response.headers.get("content-type", "text/event-stream"))
    if upstream_stream:  # a Responses client asked for one JSON answer from an always-streaming upstream
        req = client.parse(incoming)
        return _aggregated_answer(
            attempt, client, req, await read_events(attempt, response, FAMILY_PARSERS[family](req))
        )
    raw = await read_all(attempt, response)
    _track_answer(attempt, family, raw)
    attempt.finish(response.status_code)
    return HttpResponse(raw, status=response.status_code, content_type="application/json")


def _responses_error_frame(
    parser: openai_responses.StreamParser, incoming: Incoming, framer: openai_responses_stream.PassthroughFramer
) -> Callable[[ir.StreamError], bytes]:
    """A Responses pass-through's own error event, after the framer's last frame and numbered after the
    upstream's last event (§1.4)."""

    def frame(error: ir.StreamError) -> bytes:
        failed = {"id": parser.response_id, "object": "response"} if incoming.codex_client else None
        sequence = parser.last_sequence + 1
        event = openai_responses.stream_error(
            error.status, error.message, error.type, sequence_number=sequence, failed_response=failed
        )
        return framer.finish() + event

    return frame


async def _openai_passthrough(
    attempt: Attempt, incoming: Incoming, response: UpstreamResponse
) -> HttpResponseBase | Streamed:
    is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
    if incoming.stream and is_sse:
        relay = openai_chat.StreamRelay(openai_chat.wants_stream_usage(incoming.payload))
        return Streamed(_relay_openai_stream(attempt, response, relay), "text/event-stream")
    raw = await read_all(attempt, response)
    _track_answer(attempt, "openai", raw)
    attempt.finish(response.status_code)
    return HttpResponse(
        raw, status=response.status_code, content_type=response.headers.get("content-type", "application/json")
    )


async def _relay_openai_stream(
    attempt: Attempt, response: UpstreamResponse, relay: openai_chat.StreamRelay
) -> AsyncGenerator[bytes, None]:
    """OpenAI → OpenAI: forward whole SSE events as they come; the relay reads usage on the way."""
    status, error_type, message = 499, "client_disconnected", "client closed the connection"
    done_delivered = False
    try:
        async for chunk in upstream_chunks(response, attempt.keepalive):
            if chunk is None:
                yield SSE_KEEPALIVE
                continue
            attempt.mark_first_byte()
            out = relay.feed(chunk)
            if out:
                attempt.capture(out)
                yield out
                done_delivered = relay.saw_done
        out = relay.finish()
        if out:
            attempt.capture(out)
            yield out
        status, error_type, message = 200, "", ""
        if relay.upstream_error is not None:
            status, error_type = 502, "upstream_error"
            message = str(relay.upstream_error.get("message", "upstream error in stream"))
    except ReadError as exc:
        timeout = isinstance(exc, ReadTimeout)
        status, error_type = (504, "timeout_error") if timeout else (502, "upstream_error")
        message = "upstream stream stalled" if timeout else f"upstream stream cut off: {exc or type(exc).__name__}"
        yield openai_chat.stream_error_event(message, error_type, "upstream_error")
    finally:
        if status == 499 and done_delivered:
            status, error_type, message = 200, "", ""
        attempt.usage = relay.usage
        await response.aclose()
        attempt.finish(status, error_type, message)


def _track_answer(attempt: Attempt, family: str, raw: bytes) -> None:
    """Usage of a non-stream answer, read with the family's own parser."""
    try:
        answer = orjson.loads(raw)
        if isinstance(answer, dict):
            attempt.usage = FAMILY_MODULES[family].parse_response(answer).usage
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("could not read usage from a %s answer", family)


class _SseToJsonArray:
    """Gemini SSE frames re-shaped as the JSON array a client without ``alt=sse`` expects."""

    def __init__(self) -> None:
        self._tail = b""
        self._count = 0
        self._closed = False

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk
        lines = data.split(b"\n")
        self._tail = lines.pop()
        out: list[bytes] = []
        for line in lines:
            line = line.strip()
            if line.startswith(b"data:") and line[5:].strip():
                out.append((b"[" if self._count == 0 else b",") + line[5:].strip())
                self._count += 1
        return b"".join(out)

    def finish(self) -> bytes:
        if self._closed:
            return b""
        rest = self.feed(b"\n")
        return rest + (b"]" if self._count else b"[]")

    def error(self, error: ir.StreamError) -> bytes:
        """A failure the upstream did not report as the array's last element, closing it (R15);
        a line cut off mid-way is dropped."""
        self._tail, self._closed = b"", True
        element = orjson.dumps(gemini.error_body(error.status, error.message))
        return (b"[" if self._count == 0 else b",") + element + b"]"


# --- different dialects: through the IR -----------------------------------------------------


def _same_provider_family(a: str, b: str) -> bool:
    return a == b or (a in _OPENAI_FAMILY and b in _OPENAI_FAMILY)


async def _translated(
    attempt: Attempt, client: ClientDialect, incoming: Incoming, executor: Executor, suffix: ir.Thinking | None
) -> HttpResponseBase | Streamed:
    route = attempt.route
    assert route is not None
    req = client.parse(incoming)
    if suffix is not None:
        suffix.include_thoughts = req.thinking.include_thoughts if req.thinking else None
        req.thinking = suffix
    same = _same_provider_family(client.family, executor.family)
    req.thinking = thinking.resolve(
        req.thinking, route.upstream_model, same_family=same, from_suffix=suffix is not None
    )
    family = executor.family
    if family == "gemini":
        await media.inline_remote_images(req)
    upstream_stream = incoming.stream or executor.always_stream or family == "claude"
    body, betas = _render_upstream(req, family, route.upstream_model, upstream_stream)
    body = _with_payload_rules(attempt, family, body)
    response = await open_call(attempt, executor.build(route, body, upstream_stream, betas=betas))
    parser = FAMILY_PARSERS[family](req)
    if incoming.stream:
        estimate = tokens.estimate_request(req) if client.family == "claude" and family != "claude" else 0
        renderer = client.renderer(req, incoming, estimate)
        content_type = "application/json" if client is GEMINI and not incoming.sse else "text/event-stream"
        pump = pump_translated(attempt, response, parser, renderer, attempt.keepalive, client.ping(incoming))
        return Streamed(pump, content_type)
    if upstream_stream:
        return _aggregated_answer(attempt, client, req, await read_events(attempt, response, parser))
    raw = await read_all(attempt, response)
    try:
        answer = FAMILY_MODULES[family].parse_response(orjson.loads(raw), req)
    except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError, KeyError):
        attempt.finish(502, "upstream_error", "upstream answer is not valid JSON")
        raise RelayError(502, "upstream answered with a body that is not valid JSON", code="upstream_error") from None
    attempt.usage = answer.usage
    attempt.finish(200)
    return HttpResponse(client.render_response(answer, req), content_type="application/json")


def _with_payload_rules(attempt: Attempt, family: str, body: bytes) -> bytes:
    """``body`` with the config's payload rules applied; untouched (not even parsed) when there are none."""
    rules, route = attempt.payload_rules, attempt.route
    if not rules or route is None:
        return body
    edited = payload_rules.apply(
        orjson.loads(body),
        rules,
        model=route.upstream_model,
        protocol=payload_rules.protocol_for_family(family),
        requested_model=attempt.model,
    )
    return orjson.dumps(edited)


def _render_upstream(req: ir.Request, family: str, upstream_model: str, stream: bool) -> tuple[bytes, list[str]]:
    """The upstream body (model and stream mode set) and the ``anthropic-beta`` values to send with it."""
    client_model, client_stream = req.model, req.stream
    req.model, req.stream = upstream_model, stream
    try:
        module = FAMILY_MODULES[family]
        body = module.render_request(req)
        betas = anthropic_messages.upstream_betas(req) if family == "claude" else []
    finally:
        req.model, req.stream = client_model, client_stream
    return orjson.dumps(body), betas


def _aggregated_answer(
    attempt: Attempt, client: ClientDialect, req: ir.Request, aggregate: ir.Aggregator
) -> HttpResponse:
    if aggregate.error is not None:
        error = aggregate.error
        attempt.finish(error.status, error.type or "upstream_error", error.message)
        raise RelayError(error.status, error.message, code="upstream_error", error_type=error.type)
    attempt.finish(200)
    return HttpResponse(client.render_response(aggregate.response, req), content_type="application/json")


# --- token counting -------------------------------------------------------------------------


async def count_tokens(request: HttpRequest, client: ClientDialect, *, path_model: str = "") -> HttpResponseBase:
    """``/v1/messages/count_tokens`` and Gemini ``:countTokens``: the upstream's count, else a local one."""
    attempt = Attempt(dialect=client.name, path=request.path)
    try:
        attempt.key = await aresolve_api_key(request)
        incoming = _incoming(request, client, attempt, path_model, "countTokens")
        base_model, _ = _check_model(attempt, incoming.model)
        table = await scheduler.table()
        scope = route_scope(table, attempt.key, namespace_of(request))
        route = scheduler.choose(table, attempt.key, base_model, group=scope)
        executor = executor_for(route.channel.kind)
        assert executor is not None
        # A count is a request of the key like any other (management spec D7): its limits apply.
        attempt.admission = await limits.admit(attempt.key, str(attempt.request_id))
        if client is GEMINI:
            req = gemini.parse_count_tokens_request(incoming.payload, incoming.model)
        else:
            req = anthropic_messages.parse_count_tokens_request(incoming.payload, betas=incoming.betas)
        count = await _upstream_count(executor, route, req)
        if count is None:
            count = tokens.estimate_request(req)
        module = gemini if client is GEMINI else anthropic_messages
        return HttpResponse(orjson.dumps(module.count_tokens_response(count)), content_type="application/json")
    except UpstreamRejection as err:
        return client.error_response(err, upstream=True)
    except RelayError as err:
        return client.error_response(err)
    except (BadRequest, thinking.ThinkingError) as exc:
        return client.error_response(RelayError(400, str(exc), code="invalid_request"))
    finally:
        attempt.release()


async def _upstream_count(executor: Executor, route: scheduler.Route, req: ir.Request) -> int | None:
    family = executor.family
    module = FAMILY_MODULES[family]
    if not hasattr(module, "render_count_tokens"):
        return None
    client_model, req.model = req.model, route.upstream_model
    try:
        body = orjson.dumps(module.render_count_tokens(req))
        betas = anthropic_messages.upstream_betas(req, count_tokens=True) if family == "claude" else []
    finally:
        req.model = client_model
    call = executor.count_tokens(route, body, betas=betas)
    if call is None:
        return None
    throwaway = Attempt(dialect="", path="")
    throwaway.finished = True  # token counts are not logged as generation attempts
    response = await open_call(throwaway, call)
    answer = orjson.loads(await read_all(throwaway, response))
    value = answer.get("input_tokens") if family == "claude" else answer.get("totalTokens")
    return int(value) if isinstance(value, int) else None
