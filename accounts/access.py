"""The only road from a raw client key to tenant objects: ``aresolve_api_key()``.

Keys are looked up by HMAC in a short-lived in-process cache, so the request path makes no
database call for a key it has seen in the last ``CLIRELAY_KEY_CACHE_SECONDS``. Saving or
deleting a key clears the cache of the process that saved it; other processes see the change
when their entry expires.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from accounts.keys import hash_key
from channels_app.models import wildcard_match
from gateway.errors import RelayError

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

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or any(wildcard_match(p, model) for p in self.allowed_models)


_cache: dict[str, tuple[float, KeySnapshot | None]] = {}


def invalidate() -> None:
    """Forget every cached key (called when keys change)."""
    _cache.clear()


def credential_from(request: HttpRequest) -> str:
    """The key a client presented, from the places the four dialects put it."""
    meta = request.META
    auth = meta.get("HTTP_AUTHORIZATION", "")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value else auth.strip()
    return (
        meta.get("HTTP_X_API_KEY")
        or meta.get("HTTP_X_GOOG_API_KEY")
        or request.GET.get("key")
        or request.GET.get("auth_token")
        or ""
    )


async def aresolve_api_key(request: HttpRequest) -> KeySnapshot:
    """Authenticate a request, raising a 401 ``RelayError`` naming what is wrong."""
    raw = credential_from(request)
    if not raw:
        raise RelayError(401, "Missing API key", code="missing_api_key")
    digest = hash_key(raw)
    now = time.monotonic()
    hit = _cache.get(digest)
    if hit is None or hit[0] < now:
        snapshot = await sync_to_async(_load)(digest)
        if len(_cache) >= _MAX_ENTRIES:
            _cache.clear()
        ttl = settings.CLIRELAY_KEY_CACHE_SECONDS if snapshot else _NEGATIVE_TTL
        _cache[digest] = (now + ttl, snapshot)
    else:
        snapshot = hit[1]
    if snapshot is None or not hmac.compare_digest(snapshot.key_hash, digest) or not snapshot.enabled:
        raise RelayError(401, "Invalid API key", code="invalid_api_key")
    if snapshot.expires_at is not None and snapshot.expires_at <= timezone.now():
        raise RelayError(401, "API key has expired", code="api_key_expired")
    return snapshot


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
    )
