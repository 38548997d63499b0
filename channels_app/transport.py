"""The long-lived upstream HTTP clients: one ``httpx.AsyncClient`` per event loop and proxy.

Every upstream call goes through ``client_for()``, so connections are pooled and kept alive,
timeouts are explicit, and tests can swap the transport with ``use_transport()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from django.conf import settings

TransportFactory = Callable[[str], httpx.AsyncBaseTransport | None]

_clients: dict[tuple[int, str], httpx.AsyncClient] = {}
_transport_factory: TransportFactory | None = None


def timeout() -> httpx.Timeout:
    """Connect quickly or fail; a read may wait long (a slow model), but never forever."""
    return httpx.Timeout(
        connect=settings.CLIRELAY_UPSTREAM_CONNECT_TIMEOUT,
        read=settings.CLIRELAY_UPSTREAM_READ_TIMEOUT,
        write=60.0,
        pool=30.0,
    )


def client_for(proxy_url: str = "") -> httpx.AsyncClient:
    """The shared client for the running loop and ``proxy_url`` ("" = environment, none/direct = no proxy)."""
    key = (id(asyncio.get_running_loop()), proxy_url)
    client = _clients.get(key)
    if client is None or client.is_closed:
        client = _clients[key] = _build(proxy_url)
    return client


def _build(proxy_url: str) -> httpx.AsyncClient:
    transport = _transport_factory(proxy_url) if _transport_factory else None
    direct = proxy_url in ("direct", "none")
    return httpx.AsyncClient(
        timeout=timeout(),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=60),
        proxy=None if direct or not proxy_url else proxy_url,
        trust_env=not direct,
        transport=transport,
        follow_redirects=False,
    )


def use_transport(factory: TransportFactory | None) -> None:
    """Route every new client through ``factory`` (tests); ``None`` restores the network."""
    global _transport_factory
    _transport_factory = factory
    _clients.clear()
