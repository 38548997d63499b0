"""The only road from a raw client key to tenant objects: ``aresolve_api_key()`` (``aresolve_raw_key()``).

Keys are looked up by HMAC in an in-process cache, so the request path makes no database call for
a key it has seen before: an entry older than ``CLIRELAY_KEY_CACHE_SECONDS`` is still served while
one background read refreshes it, and concurrent first requests for a key share one read. Saving or
deleting a key clears the cache of the process that saved it; other processes see the change
when their entry expires.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, QueryDict
from django.utils import timezone

from accounts.keys import hash_key
from channels_app.models import wildcard_match
from gateway.errors import RelayError
from gateway.fastpath import closes_old_connections

_NEGATIVE_TTL = 5.0
_MAX_ENTRIES = 100_000


@dataclass(slots=True, frozen=True)
class KeySnapshot:
    """What the request path needs to know about a client key, detached from the ORM."""

    id: int
    team_id: int
    name: str
    display: str
    key_hash: str
    enabled: bool
    expires_at: dt.datetime | None
    allowed_models: tuple[str, ...]
    allowed_group_ids: frozenset[int]
    allowed_channel_ids: frozenset[int]
    system_prompt: str
    # Limits (accounts/limits.py); 0 = unlimited. Spending is in micro-USD so checks stay integer.
    daily_request_limit: int = 0
    total_request_limit: int = 0
    token_quota: int = 0
    spending_limit_micro: int = 0
    rpm_limit: int = 0
    tpm_limit: int = 0
    concurrency_limit: int = 0
    limited: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once per cached snapshot: a key without limits skips the limiter entirely.
        limits = (
            self.daily_request_limit,
            self.total_request_limit,
            self.token_quota,
            self.spending_limit_micro,
            self.rpm_limit,
            self.tpm_limit,
            self.concurrency_limit,
        )
        object.__setattr__(self, "limited", any(limits))

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or any(wildcard_match(p, model) for p in self.allowed_models)


_cache: dict[str, tuple[float, KeySnapshot | None]] = {}


def invalidate() -> None:
    """Forget every cached key (called when keys change)."""
    global _generation
    _generation += 1
    _cache.clear()


_generation = 0  # bumped by invalidate(): a read that started before a change is not cached


def credential_from(request: HttpRequest) -> str:
    """The key a client presented, from the places the four dialects put it."""
    meta = request.META
    return _credential(
        meta.get("HTTP_AUTHORIZATION", ""),
        meta.get("HTTP_X_API_KEY") or meta.get("HTTP_X_GOOG_API_KEY") or "",
        request.GET,
    )


def credential_from_scope(scope: Mapping[str, Any]) -> str:
    """The key a WebSocket client presented in its handshake: the same places as over HTTP."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    query = QueryDict(scope.get("query_string", b"").decode("latin-1"))
    return _credential(
        headers.get("authorization", ""), headers.get("x-api-key") or headers.get("x-goog-api-key") or "", query
    )


def _credential(authorization: str, key_header: str, query: Mapping[str, str]) -> str:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value else authorization.strip()
    return key_header or query.get("key") or query.get("auth_token") or ""


async def aresolve_api_key(request: HttpRequest) -> KeySnapshot:
    """Authenticate a request, raising a 401 ``RelayError`` naming what is wrong."""
    return await aresolve_raw_key(credential_from(request))


async def aresolve_raw_key(raw: str) -> KeySnapshot:
    """The key behind a raw credential ("" when none was presented), or a 401 ``RelayError``."""
    if not raw:
        raise RelayError(401, "Missing API key", code="missing_api_key")
    digest = hash_key(raw)
    hit = _cache.get(digest)
    if hit is None or (hit[1] is None and hit[0] < time.monotonic()):
        snapshot = await _load_once(digest)
    else:
        snapshot = hit[1]
        if hit[0] < time.monotonic():
            _refresh_later(digest)  # serve what we know; the next requests get the fresh copy
    if snapshot is None or not hmac.compare_digest(snapshot.key_hash, digest) or not snapshot.enabled:
        raise RelayError(401, "Invalid API key", code="invalid_api_key")
    if snapshot.expires_at is not None and snapshot.expires_at <= timezone.now():
        raise RelayError(401, "API key has expired", code="api_key_expired")
    return snapshot


_loading: dict[tuple[int, str], asyncio.Future[KeySnapshot | None]] = {}


async def _load_once(digest: str) -> KeySnapshot | None:
    """Load a key into the cache; concurrent requests for the same key share one database read."""
    flight = (id(asyncio.get_running_loop()), digest)
    pending = _loading.get(flight)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[KeySnapshot | None] = asyncio.get_running_loop().create_future()
    _loading[flight] = future
    generation = _generation
    try:
        snapshot = await sync_to_async(_load)(digest)
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: waiters re-raise it, nobody else must log it
        raise
    finally:
        _loading.pop(flight, None)
    if generation == _generation:
        _remember(digest, snapshot)
    future.set_result(snapshot)
    return snapshot


def _refresh_later(digest: str) -> None:
    """Reload an expired key in the background (once), so no request waits for the database."""
    if (id(asyncio.get_running_loop()), digest) in _loading:
        return
    task = asyncio.get_running_loop().create_task(_load_once(digest))
    _background.add(task)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task[KeySnapshot | None]] = set()


def _remember(digest: str, snapshot: KeySnapshot | None) -> None:
    if len(_cache) >= _MAX_ENTRIES:
        _cache.clear()
    ttl = settings.CLIRELAY_KEY_CACHE_SECONDS if snapshot else _NEGATIVE_TTL
    _cache[digest] = (time.monotonic() + ttl, snapshot)


@closes_old_connections  # no request_finished closes them on the fast path
def _load(digest: str) -> KeySnapshot | None:
    from accounts.models import ApiKey

    key = ApiKey.objects.filter(key_hash=digest).prefetch_related("allowed_channel_groups", "allowed_channels").first()
    if key is None:
        return None
    return KeySnapshot(
        id=key.pk,
        team_id=key.team_id,
        name=key.name,
        display=key.masked,
        key_hash=key.key_hash,
        enabled=key.enabled,
        expires_at=key.expires_at,
        allowed_models=tuple(p for p in key.allowed_models if isinstance(p, str) and p),
        allowed_group_ids=frozenset(g.pk for g in key.allowed_channel_groups.all()),
        allowed_channel_ids=frozenset(c.pk for c in key.allowed_channels.all()),
        system_prompt=key.system_prompt,
        daily_request_limit=key.daily_request_limit,
        total_request_limit=key.total_request_limit,
        token_quota=key.token_quota,
        spending_limit_micro=int(key.spending_limit_usd * 1_000_000),
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        concurrency_limit=key.concurrency_limit,
    )
