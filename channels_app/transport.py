"""The long-lived upstream HTTP sessions: one ``aiohttp.ClientSession`` per event loop and proxy.

Every upstream call goes through ``session_for()``, so connections are pooled and kept alive and
timeouts are explicit. aiohttp rather than httpx because the relay spends its time here: measured on
one core against the same local upstream, aiohttp completes about 4,500 small requests a second
where httpx completes about 950 (bench/README.md).

``UpstreamResponse`` is the one shape the relay reads an answer through (status, headers, the body
in chunks as they arrive, or whole); transport failures surface as ``ReadError`` and
``ReadTimeout`` only, whatever the client library raises. Tests can send traffic for a public
host to a local fake with ``use_rewrite()``.
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.request import getproxies

import aiohttp
from django.conf import settings
from multidict import CIMultiDictProxy

Rewrite = Callable[[str], str]

_sessions: dict[tuple[int, str], aiohttp.ClientSession] = {}
_rewrite: Rewrite | None = None
_DIRECT = ("direct", "none")
_SOCKS = ("socks4://", "socks4a://", "socks5://", "socks5h://")


class ReadError(Exception):
    """The upstream connection failed while the answer was being read."""


class ReadTimeout(ReadError):
    """The upstream went quiet for longer than the read timeout."""


class ConnectError(Exception):
    """No answer could be had: connection refused, DNS, TLS, proxy, or a write that failed."""


class ConnectTimeout(ConnectError):
    """The upstream did not accept the connection or send its headers in time."""


def timeout() -> aiohttp.ClientTimeout:
    """Connect quickly or fail; a read may wait long (a slow model), but never forever."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=settings.CLIRELAY_UPSTREAM_CONNECT_TIMEOUT + 30.0,  # a pool slot, then the connection
        sock_connect=settings.CLIRELAY_UPSTREAM_CONNECT_TIMEOUT,
        sock_read=settings.CLIRELAY_UPSTREAM_READ_TIMEOUT,
    )


def session_for(proxy_url: str = "") -> aiohttp.ClientSession:
    """The shared session for the running loop and ``proxy_url`` ("" = environment, none/direct = no proxy)."""
    key = (id(asyncio.get_running_loop()), proxy_url)
    session = _sessions.get(key)
    if session is None or session.closed:
        session = _sessions[key] = _build(proxy_url)
    return session


def _build(proxy_url: str) -> aiohttp.ClientSession:
    direct = proxy_url in _DIRECT
    connector: aiohttp.BaseConnector
    if proxy_url.startswith(_SOCKS):
        from aiohttp_socks import ProxyConnector

        connector = ProxyConnector.from_url(proxy_url, limit=1000, keepalive_timeout=60)
    else:
        connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout(),
        # The environment's proxy settings, when a channel names none; trusting the environment costs
        # aiohttp a thread hop and two scans of os.environ per request, so only when it sets a proxy.
        trust_env=not direct and not proxy_url and bool(getproxies()),
        auto_decompress=True,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _http_proxy(proxy_url: str) -> str | None:
    if not proxy_url or proxy_url in _DIRECT or proxy_url.startswith(_SOCKS):
        return None
    return proxy_url


async def open_response(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes,
    params: Mapping[str, str] | None = None,
    proxy_url: str = "",
    timeout_s: float | None = None,
) -> UpstreamResponse:
    """Send a request and return once the answer's headers are in (its body not yet read)."""
    session = session_for(proxy_url)
    target = _rewrite(url) if _rewrite is not None else url
    options: dict[str, Any] = {"proxy": _http_proxy(proxy_url), "allow_redirects": False}
    if timeout_s is not None:
        options["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
    try:
        response = await session.request(
            method, target, headers=headers, data=body or None, params=params or None, **options
        )
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise ConnectTimeout(f"upstream timed out: {type(exc).__name__}") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise ConnectError(f"upstream unreachable: {exc or type(exc).__name__}") from None
    return UpstreamResponse(response)


class UpstreamResponse:
    """An upstream answer whose headers are in: read it in chunks as they arrive, or whole, then close."""

    __slots__ = ("_first", "_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code: int = response.status
        self.headers: CIMultiDictProxy[str] = response.headers
        self._first: bytes | None = None  # read by ``peek`` and not yet handed over

    async def peek(self) -> bytes:
        """The first piece of the body (b"" for an empty one), which the readers then still see."""
        if self._first is None:
            self._first = await _next_piece(self._response.content)
        return self._first

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body, decoded from any content-encoding, in the pieces the network delivers."""
        first, self._first = self._first, None
        if first:
            yield first
        stream = self._response.content
        while True:
            try:
                chunk = await stream.readany()
            except (TimeoutError, aiohttp.ServerTimeoutError):
                raise ReadTimeout("upstream stalled past the read timeout") from None
            except (aiohttp.ClientError, OSError) as exc:
                # readany() raises as soon as the connection is lost, before handing over what
                # arrived with the loss: those bytes belong to the answer the client is reading.
                rest = _buffered(stream)
                if rest:
                    yield rest
                raise ReadError(str(exc) or type(exc).__name__) from None
            if not chunk:
                return
            yield chunk

    async def aread(self) -> bytes:
        """The whole body."""
        first, self._first = self._first, None
        try:
            return (first or b"") + await self._response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise ReadTimeout("upstream stalled past the read timeout") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ReadError(str(exc) or type(exc).__name__) from None

    async def aclose(self) -> None:
        """Give the connection back to the pool when the body was read to the end, else drop it."""
        response = self._response
        if response.content.is_eof():
            response.release()
        else:
            response.close()


async def _next_piece(stream: aiohttp.StreamReader) -> bytes:
    """One ``readany()`` with the failures mapped as ``aiter_raw`` maps them (a cut-off keeps what came)."""
    try:
        return await stream.readany()
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise ReadTimeout("upstream stalled past the read timeout") from None
    except (aiohttp.ClientError, OSError) as exc:
        rest = _buffered(stream)
        if rest:
            return rest  # the failure is raised again by the next read
        raise ReadError(str(exc) or type(exc).__name__) from None


def _buffered(stream: aiohttp.StreamReader) -> bytes:
    """What ``stream`` holds already (aiohttp's own buffer read, which ignores the stored failure)."""
    try:
        return stream._read_nowait(-1)  # private, so aiohttp is pinned; the cut-off tests cover it
    except Exception:  # the connection is already lost; there is nothing more to hand over
        return b""


def use_rewrite(rewrite: Rewrite | None) -> None:
    """Send every upstream URL through ``rewrite`` first (tests); ``None`` restores the network."""
    global _rewrite
    _rewrite = rewrite


def reset() -> None:
    """Forget every session, so that the next call builds one with the current settings (tests)."""
    _sessions.clear()


@atexit.register
def _close_all() -> None:
    """Close the pooled connections at exit (their event loops are gone by then, so synchronously)."""
    for session in list(_sessions.values()):
        connector = session.connector
        session.detach()
        if connector is not None:
            # close() is a coroutine and the loop is gone: its synchronous part closes the sockets
            # (private, so aiohttp is pinned; the exit of every test run exercises it).
            connector._close(abort_ssl=True)
    _sessions.clear()
