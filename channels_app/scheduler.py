"""Which channel serves a request: candidates for a model, then round-robin or fill-first.

The routing table is an in-memory snapshot of every enabled channel, rebuilt when channels
change in this process (signals) and at most every ``CLIRELAY_ROUTES_CACHE_SECONDS`` so
changes made by other processes arrive too. Choosing a route makes no database call.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings

from accounts.access import KeySnapshot
from channels_app.executors.registry import supported_kinds
from channels_app.models import DEFAULT_BASE_URLS, Channel, RuntimeSettings
from gateway.errors import RelayError


@dataclass(slots=True, frozen=True)
class ChannelSnapshot:
    """A channel as the request path sees it."""

    id: int
    team_id: int
    name: str
    kind: str
    base_url: str
    headers: dict[str, str]
    priority: int
    group_ids: frozenset[int]
    credentials: tuple[tuple[str, str], ...]  # (secret, proxy URL)


@dataclass(slots=True, frozen=True)
class Route:
    """One way to serve a model: a channel, one of its credentials, and the upstream model name."""

    channel: ChannelSnapshot
    upstream_model: str
    secret: str
    proxy_url: str


@dataclass(slots=True)
class RoutingTable:
    """Per team: client-visible model name (lower-case) → (channel, upstream model) entries."""

    built_at: float
    strategy: str
    keepalive_seconds: int = 0
    models: dict[int, dict[str, list[tuple[ChannelSnapshot, str, str]]]] = field(default_factory=dict)

    def entries(self, team_id: int, model: str) -> list[tuple[ChannelSnapshot, str, str]]:
        return self.models.get(team_id, {}).get(model.lower(), [])


_table: RoutingTable | None = None
_dirty = True
_cursors: dict[tuple[int, str], itertools.count[int]] = defaultdict(itertools.count)


def invalidate() -> None:
    """Mark the routing table stale; the next request rebuilds it."""
    global _dirty
    _dirty = True


async def table() -> RoutingTable:
    global _table, _dirty
    current = _table
    if current is None or _dirty or time.monotonic() - current.built_at > settings.CLIRELAY_ROUTES_CACHE_SECONDS:
        _dirty = False
        current = _table = await sync_to_async(build_table)()
    return current


def build_table() -> RoutingTable:
    """Read every enabled channel the relay can speak to into a routing table."""
    runtime = RuntimeSettings.load()
    table = RoutingTable(
        built_at=time.monotonic(),
        strategy=runtime.routing_strategy,
        keepalive_seconds=runtime.streaming_keepalive_seconds,
    )
    channels = (
        Channel.objects.filter(enabled=True, kind__in=supported_kinds())
        .select_related("proxy")
        .prefetch_related("groups", "extra_keys")
    )
    for channel in channels:
        snapshot = _snapshot(channel, runtime.proxy_url)
        team_models = table.models.setdefault(channel.team_id, {})
        for visible, upstream in channel.model_routes():
            names = [visible, f"{channel.prefix}/{visible}"] if channel.prefix else [visible]
            if channel.prefix and runtime.force_model_prefix and channel.prefix != visible:
                names = names[1:]
            for name in names:
                team_models.setdefault(name.lower(), []).append((snapshot, upstream, name))
    return table


def _snapshot(channel: Channel, global_proxy: str) -> ChannelSnapshot:
    if channel.proxy is not None and channel.proxy.enabled:
        proxy = channel.proxy.url
    else:
        proxy = channel.proxy_url or global_proxy
    credentials = [(channel.secret, proxy)]
    credentials += [(k.secret, k.proxy_url or proxy) for k in channel.extra_keys.all() if k.enabled]
    return ChannelSnapshot(
        id=channel.pk,
        team_id=channel.team_id,
        name=channel.name,
        kind=channel.kind,
        base_url=(channel.base_url or DEFAULT_BASE_URLS.get(channel.kind, "")).rstrip("/"),
        headers=dict(channel.headers),
        priority=channel.priority,
        group_ids=frozenset(g.pk for g in channel.groups.all()),
        credentials=tuple(credentials),
    )


def permitted(key: KeySnapshot, channel: ChannelSnapshot) -> bool:
    """Whether ``key`` may use ``channel``: same team, and inside its allowed channels and groups."""
    if channel.team_id != key.team_id:
        return False
    if key.allowed_channel_ids and channel.id not in key.allowed_channel_ids:
        return False
    return not key.allowed_group_ids or bool(key.allowed_group_ids & channel.group_ids)


def choose(current: RoutingTable, key: KeySnapshot, model: str) -> Route:
    """The route for this request, or a 404 ``RelayError`` when nothing may serve ``model``."""
    entries = [e for e in current.entries(key.team_id, model) if permitted(key, e[0])]
    if not entries:
        raise RelayError(
            404, f"The model '{model}' does not exist or you do not have access to it.", code="model_not_found"
        )
    top = max(e[0].priority for e in entries)
    tier = sorted((e for e in entries if e[0].priority == top), key=lambda e: e[0].id)
    slots = [(e, cred) for e in tier for cred in e[0].credentials]
    if current.strategy == RuntimeSettings.Strategy.FILL_FIRST:
        index = 0
    else:
        index = next(_cursors[(key.team_id, model.lower())]) % len(slots)
    (channel, upstream, _), (secret, proxy) = slots[index]
    return Route(channel=channel, upstream_model=upstream, secret=secret, proxy_url=proxy)


def models_for(current: RoutingTable, key: KeySnapshot) -> list[tuple[str, ChannelSnapshot]]:
    """The models ``key`` may call, each with a channel that serves it."""
    found: list[tuple[str, ChannelSnapshot]] = []
    for entries in current.models.get(key.team_id, {}).values():
        usable = [(name, channel) for channel, _, name in entries if permitted(key, channel)]
        if usable and key.allows_model(usable[0][0]):
            found.append(usable[0])
    return found
