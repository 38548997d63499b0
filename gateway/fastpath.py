"""The relay URLs served straight from ASGI, past Django's middleware and request signals.

``/v1/...``, ``/v1beta/...``, ``/<namespace>/v1[beta]/...`` and ``/healthz`` authenticate with API
keys, never cookies, and make no database call per request; yet under Django's ASGI handler
each one pays for eight ``MiddlewareMixin`` middlewares and the ``request_started`` /
``request_finished`` receivers, each a hop to a thread and back: about 40% of the gateway's CPU
under load. ``RelayFastPath`` serves those URLs itself with what they do need: the body (with
the size limit), the ``ALLOWED_HOSTS`` check, ``resolve()`` and the async view django-ninja
built, the response written to ASGI (a stream chunk by chunk, stopped and closed when the client
hangs up). Everything else (the admin, static files) goes to Django unchanged, and
``CLIRELAY_FAST_PATH=False`` sends everything there.

Without ``request_finished`` nobody closes database connections after a request: the few
loaders the relay reaches on a cache miss (``accounts.access``, ``channels_app.scheduler``,
``accounts.limits``) call ``close_old_connections()`` themselves, around their own work.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import suppress
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import (
    BadRequest,
    DisallowedHost,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
)
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.db import connections
from django.http import Http404, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import Resolver404, ResolverMatch, URLResolver, get_resolver

from gateway.dialects import openai_chat
from gateway.namespaces import NAMESPACED

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)
security_log = logging.getLogger("django.security.DisallowedHost")

_RELAY_PREFIXES = ("/v1/", "/v1beta/")
_DJANGO_PREFIXES = ("/admin/", "/static/")  # never a namespace (gateway.namespaces.dispatch)


def is_relay_path(path: str) -> bool:
    """Whether ``path`` (without the script prefix) is one of the relay's URLs."""
    if path.startswith(_RELAY_PREFIXES) or path == "/healthz":
        return True
    return "/v1" in path and not path.startswith(_DJANGO_PREFIXES) and NAMESPACED.match(path[1:]) is not None


def closes_old_connections(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` (sync database work the relay URLs reach) between two ``close_old_connections()``.

    Django closes a request's connections on ``request_started`` / ``request_finished``; the fast
    path sends neither, so its loaders close theirs. A connection inside an ``atomic`` block is
    left alone: that transaction belongs to whoever opened it (a test, a management command).
    """

    @wraps(func)
    def closing(*args: P.args, **kwargs: P.kwargs) -> R:
        _close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            _close_old_connections()

    return closing


def _close_old_connections() -> None:
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


class RelayFastPath:
    """ASGI app for the ``http`` protocol: the relay URLs here, anything else to ``django_app``."""

    def __init__(self, django_app: ASGIHandler) -> None:
        self.django_app = django_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        root = scope.get("root_path")
        if root:
            path = path.removeprefix(root)
        if not settings.CLIRELAY_FAST_PATH or not is_relay_path(path):
            await self.django_app(scope, receive, send)
            return
        body = await _read_body(receive, settings.CLIRELAY_MAX_BODY_BYTES, scope)
        if body is None:
            return  # the client left before sending its whole request
        # Django's handler gives each request its own thread for sync_to_async (the key and
        # routing loaders on a cache miss); so does this one.
        async with ThreadSensitiveContext():
            await self._serve(scope, receive, send, body)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, body: bytes | _Oversized) -> None:
        try:
            request = _request(scope, body)
            request.get_host()  # DisallowedHost for a Host not in ALLOWED_HOSTS, as CommonMiddleware would
            match = _resolve(request.path_info)
        except Exception as exc:
            await _send_whole(_error_response(exc, scope), send, head=scope["method"] == "HEAD")
            return
        if not iscoroutinefunction(match.func):
            # Not one of ours (django-ninja builds async views for async operations): Django serves it.
            await self.django_app(scope, _replay(body, receive), send)
            return
        request.resolver_match = match
        # As Django's handler does: the view and its response in a task that a hang-up cancels,
        # so a stream's generator runs its ``finally`` (the 499 row, the concurrency slot).
        serving = asyncio.ensure_future(self._respond(request, match.func(request, *match.args, **match.kwargs), send))
        watching = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((serving, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watching, serving):
                if not task.done():
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
        if not serving.cancelled():
            serving.result()  # _respond handles its own errors; anything left is a bug worth a traceback

    async def _respond(self, request: ASGIRequest, view: Awaitable[HttpResponseBase], send: Send) -> None:
        head = request.method == "HEAD"
        try:
            response = await view
        except Exception as exc:
            response = _error_response(exc, request.scope)
        if not isinstance(response, StreamingHttpResponse):
            if response.streaming:  # FileResponse and other sync iterators: Django's own writer
                await self.django_app.send_response(response, send)
                await sync_to_async(response.close, thread_sensitive=False)()
                return
            await _send_whole(response, send, head=head)
            return
        if not response.is_async:
            await self.django_app.send_response(response, send)
            await sync_to_async(response.close, thread_sensitive=False)()
            return
        await _send_stream(response, send, head=head, path=request.path)


def _resolve(path: str) -> ResolverMatch:
    """``resolve(path)``, remembered: the relay has a handful of URLs, and resolving one walks every
    pattern before it (~35 µs a request, twice that on a core the request finds cold). Keyed by the
    resolver, so a changed URLconf (``clear_url_caches``) starts afresh; a path that resolves to
    nothing is not kept."""
    resolver = get_resolver()
    key = (resolver, path)
    match = _resolved.get(key)
    if match is None:
        match = resolver.resolve(path)
        if len(_resolved) >= _RESOLVED_MAX:  # many distinct paths (Gemini model names): start over
            _resolved.clear()
        _resolved[key] = match
    return match


_resolved: dict[tuple[URLResolver, str], ResolverMatch] = {}
_RESOLVED_MAX = 1024


async def _read_body(receive: Receive, limit: int, scope: Scope) -> bytes | _Oversized | None:
    """The whole request body, ``_OVERSIZED`` past ``limit``, None if the client left first.

    Past the limit the rest is still read, and dropped: a client answered before it has sent its
    whole body would often fail writing it instead of reading the 413.
    """
    declared = _content_length(scope)
    oversized = declared is not None and declared > limit
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk and not oversized:
            size += len(chunk)
            oversized = size > limit
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if oversized:
        return _OVERSIZED
    return b"".join(chunks)  # one chunk (the usual case) is returned as it is, not copied


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _Oversized:
    """A body past ``CLIRELAY_MAX_BODY_BYTES``, not kept."""


_OVERSIZED = _Oversized()


class _OversizedRequest(ASGIRequest):
    """A request whose body was too large to read: ``request.body`` raises as Django's own does.

    The view then answers 413 in its client's dialect (``gateway.relay.read_raw``).
    """

    @property
    def body(self) -> bytes:
        raise RequestDataTooBig(f"request body exceeds {settings.CLIRELAY_MAX_BODY_BYTES} bytes")


def _request(scope: Scope, body: bytes | _Oversized) -> ASGIRequest:
    if isinstance(body, _Oversized):
        return _OversizedRequest(scope, io.BytesIO())
    request = ASGIRequest(scope, io.BytesIO(body))
    request._body = body  # what ``request.body`` reads first: no second copy through the stream
    return request


def _replay(body: bytes | _Oversized, receive: Receive) -> Receive:
    """``receive`` for Django's handler: the body already read, then the connection's own messages."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": b"" if isinstance(body, _Oversized) else body, "more_body": False}

    return replayed


async def _disconnected(receive: Receive) -> None:
    """Return when the client hangs up."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _error_response(exc: Exception, scope: Mapping[str, Any]) -> HttpResponse:
    """The relay's own failures in OpenAI's envelope, mapped as Django's handler maps them."""
    if isinstance(exc, (Http404, Resolver404)):
        return _error(404, f"no such endpoint: {scope['method']} {scope['path']}", "invalid_request_error", "not_found")
    if isinstance(exc, RequestDataTooBig):
        message = f"request body exceeds {settings.CLIRELAY_MAX_BODY_BYTES} bytes"
        return _error(413, message, "invalid_request_error", "request_too_large")
    if isinstance(exc, DisallowedHost):
        security_log.warning("%s", exc)
        return _error(400, "the Host header names no host this gateway serves", "invalid_request_error", "bad_host")
    if isinstance(exc, (BadRequest, SuspiciousOperation, UnicodeDecodeError)):
        return _error(400, "bad request", "invalid_request_error", "bad_request")
    if isinstance(exc, PermissionDenied):
        return _error(403, "forbidden", "permission_error", "forbidden")
    log.error("fast path: %s %s failed", scope["method"], scope["path"], exc_info=exc)
    return _error(500, "internal error in the gateway", "server_error", "internal_error")


def _error(status: int, message: str, error_type: str, code: str) -> HttpResponse:
    body = openai_chat.error_body(message, error_type, code)
    return HttpResponse(body, status=status, content_type="application/json")


def _headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    """The response's headers for ASGI, case kept (Django's handler does the same)."""
    return [
        (
            name.encode("ascii") if isinstance(name, str) else bytes(name),
            value.encode("latin1") if isinstance(value, str) else bytes(value),
        )
        for name, value in response.items()
    ]


async def _send_whole(response: HttpResponseBase, send: Send, *, head: bool) -> None:
    assert isinstance(response, HttpResponse)
    content = response.content
    headers = _headers(response)
    if not response.has_header("Content-Length"):
        headers.append((b"Content-Length", str(len(content)).encode("ascii")))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else content})


async def _send_stream(response: StreamingHttpResponse, send: Send, *, head: bool, path: str) -> None:
    """Each chunk as the view's generator yields it; the generator closed (and awaited) however it ends.

    Django's ``streaming_content`` wraps the view's iterator in a generator of its own, and closing
    that one would leave the view's to the garbage collector: the 499 row and the concurrency slot
    would wait for it. So the view's own iterator is read and closed here.
    """
    iterator: AsyncIterator[Any] = response._iterator  # type: ignore[attr-defined]
    await send({"type": "http.response.start", "status": response.status_code, "headers": _headers(response)})
    try:
        async for part in iterator:  # to the end even for HEAD: the generator's ``finally`` records the row
            chunk = part if isinstance(part, bytes) else response.make_bytes(part)
            if chunk and not head:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except Exception:
        # Headers are out: nothing to answer. Leaving the body unfinished makes the server drop
        # the connection, so the client sees a cut-off stream, not a complete one.
        log.exception("fast path: the stream of %s failed", path)
        return
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
