"""Which channels may serve a request, in the order to try them (providers spec §14.1, management §2.4).

The routing table is an in-memory snapshot of every enabled channel, routing group and path
route, rebuilt when they change in this process (signals) and at most every
``CLIRELAY_ROUTES_CACHE_SECONDS`` so changes made by other processes arrive too. Choosing routes
makes no database call and no Redis call: cool-downs are read from ``cooldowns``' in-process
mirror, which ``table()`` refreshes at most once a second.

``candidates(table, key, model, group=..., exclude=...)`` is the ordered list a request may try:

* the key's team's enabled channels serving ``model`` (own names, aliases, ``fork``,
  ``prefix/model``, ``force-model-prefix``), and the channels shared with every team, minus
  excluded models;
* restricted to the key's allowed channels and groups, and to the route group (``/<group>/v1``);
  with ``fallback: default`` the group constraint is dropped when the group has nothing available;
* minus channels in ``exclude`` (already tried) and credentials cooling down for the model (a
  channel's extra keys cool down apart from its own key);
* ordered: unscoped requests use the highest priority tier (round-robin cursor per team and
  model, or fill-first), lower tiers following as failover; scoped requests (a route group or a
  key limited to groups) pick by smooth weighted round-robin with priority as the weight, unless
  the route group sets its own strategy (round-robin or fill-first over its priority tiers).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from accounts.access import KeySnapshot
from accounts.models import ChannelGroup, PathRoute
from channels_app import cooldowns
from channels_app.executors.registry import supported_kinds
from channels_app.models import DEFAULT_BASE_URLS, Channel, RuntimeSettings, wildcard_match
from gateway.errors import RelayError
from gateway.fastpath import closes_old_connections

DEFAULT_GROUP = "default"


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
    group_ids: frozenset[int]  # explicit groups: the M2M plus groups whose match rules name it
    credentials: tuple[tuple[str, str, str], ...]  # (secret, proxy URL, credential id for cool-downs)
    prefix: str = ""
    implicit_groups: frozenset[str] = frozenset()  # lower-case: its prefix, or "default"
    disable_cooling: bool = False
    transient_cooldown_s: int = 0  # 0 = 60 s, -1 = no cool-down after 408/5xx
    shared: bool = False  # serves every team's keys


@dataclass(slots=True, frozen=True)
class Route:
    """One way to serve a model: a channel, one of its credentials, and the upstream model name."""

    channel: ChannelSnapshot
    upstream_model: str
    secret: str
    proxy_url: str
    credential: str  # "12" for channel 12's own key, "12k3" for its extra key 3 (cool-down identity)


@dataclass(slots=True, frozen=True)
class GroupScope:
    """The routing group a request is confined to (``/<group>/v1/...`` or a path route)."""

    name: str  # lower-case
    group_id: int | None = None  # None: an implicit group (a prefix, or "default")
    fallback: str = PathRoute.Fallback.NONE
    priority: int = 0
    strategy: str = ChannelGroup.Strategy.WEIGHTED


@dataclass(slots=True, frozen=True)
class Entry:
    """A channel serving a client-visible model name under its upstream name, with its routes built once."""

    channel: ChannelSnapshot
    upstream_model: str
    name: str
    routes: tuple[Route, ...] = ()

    def __post_init__(self) -> None:
        if not self.routes:
            routes = tuple(Route(self.channel, self.upstream_model, *c) for c in self.channel.credentials)
            object.__setattr__(self, "routes", routes)


@dataclass(slots=True)
class RoutingTable:
    """Per team: client-visible model name (lower-case) → entries; groups and path routes by name."""

    built_at: float
    strategy: str
    keepalive_seconds: int = 0
    bootstrap_retries: int = 0  # streams that may fail over after a 2xx whose first event is an error
    request_retry: int = 3
    max_retry_interval: int = 30
    max_retry_credentials: int = 0  # upstreams tried per round; 0 = every candidate
    payload_rules: dict[str, Any] = field(default_factory=dict)  # config.yaml ``payload`` (gateway.payload_rules)
    models: dict[int, dict[str, list[Entry]]] = field(default_factory=dict)
    shared_models: dict[str, list[Entry]] = field(default_factory=dict)  # channels shared with every team
    groups: dict[int, dict[str, GroupScope]] = field(default_factory=dict)  # by lower-case name and slug
    implicit_groups: dict[int, set[str]] = field(default_factory=dict)
    shared_implicit_groups: set[str] = field(default_factory=set)
    path_routes: dict[int, dict[str, GroupScope]] = field(default_factory=dict)  # by lower-case path
    group_priority: dict[int, int] = field(default_factory=dict)

    def entries(self, team_id: int, model: str) -> list[Entry]:
        name = model.lower()
        own = self.models.get(team_id, {}).get(name, [])
        shared = self.shared_models.get(name)
        return own + shared if shared else own

    def model_names(self, team_id: int) -> list[str]:
        """Every lower-case model name a team's keys may reach, its own channels' first."""
        return list(dict.fromkeys([*self.models.get(team_id, {}), *self.shared_models]))


class ModelCooldown(RelayError):
    """Every channel that may serve the model is cooling down: 429 with ``Retry-After`` (§14.1)."""

    def __init__(self, model: str, reset_seconds: float) -> None:
        seconds = max(math.ceil(reset_seconds), 1)
        super().__init__(
            429,
            f"All credentials for model {model} are cooling down; try again in {seconds} s",
            code="model_cooldown",
            retry_after=seconds,
        )
        self.model = model
        self.reset_seconds = seconds
        self.reset_time = (datetime.now(UTC) + timedelta(seconds=reset_seconds)).isoformat(timespec="seconds")
        self.details = {"model": model, "reset_time": self.reset_time, "reset_seconds": seconds}


_table: RoutingTable | None = None
_dirty = True
_cursors: dict[tuple[object, ...], itertools.count[int]] = defaultdict(itertools.count)
_weights: dict[tuple[object, ...], dict[str, int]] = defaultdict(dict)


def invalidate() -> None:
    """Mark the routing table stale; the next request rebuilds it."""
    global _dirty
    _dirty = True


def reset_state() -> None:
    """Forget round-robin cursors and weighted scores (tests)."""
    _cursors.clear()
    _weights.clear()


async def table() -> RoutingTable:
    """The current routing table, with the cool-down mirror brought up to date (≤ 1 round trip / s).

    A table this process knows to be stale (a change saved here) is rebuilt before answering; one
    that is merely old (changes other processes may have saved) is served while a background task
    rebuilds it, so no request waits for the database.
    """
    global _table, _dirty
    current = _table
    if current is None or _dirty:
        _dirty = False
        current = _table = await sync_to_async(build_table)()
    elif time.monotonic() - current.built_at > settings.CLIRELAY_ROUTES_CACHE_SECONDS:
        _rebuild_later()
    await cooldowns.arefresh()
    return current


_rebuilding: set[asyncio.Task[None]] = set()


def _rebuild_later() -> None:
    if not _rebuilding:
        task = asyncio.get_running_loop().create_task(_rebuild())
        _rebuilding.add(task)
        task.add_done_callback(_rebuilding.discard)


async def _rebuild() -> None:
    global _table
    fresh = await sync_to_async(build_table)()
    if not _dirty:  # a change saved meanwhile: the next request rebuilds from the newer state
        _table = fresh


# --- building the table -----------------------------------------------------------------------


@closes_old_connections  # no request_finished closes them on the fast path
def build_table() -> RoutingTable:
    """Read every enabled channel the relay can speak to, the groups and the path routes."""
    runtime = RuntimeSettings.load()
    table = RoutingTable(
        built_at=time.monotonic(),
        strategy=runtime.routing_strategy,
        keepalive_seconds=runtime.streaming_keepalive_seconds,
        bootstrap_retries=runtime.streaming_bootstrap_retries,
        request_retry=runtime.request_retry,
        max_retry_interval=runtime.max_retry_interval,
        max_retry_credentials=runtime.max_retry_credentials,
        payload_rules=runtime.payload_rules if isinstance(runtime.payload_rules, dict) else {},
    )
    groups = list(ChannelGroup.objects.all())
    for group in groups:
        scope = GroupScope(group.name.lower(), group.pk, priority=group.priority, strategy=group.strategy)
        named = table.groups.setdefault(group.team_id, {})
        named.setdefault(scope.name, scope)
        named.setdefault(group.slug.lower(), scope)
        table.group_priority[group.pk] = group.priority
    channels = (
        Channel.objects.filter(enabled=True, kind__in=supported_kinds())
        .select_related("proxy")
        .prefetch_related("groups", "extra_keys")
    )
    for channel in channels:
        # A shared channel joins any team's groups by their match rules; others only their own team's.
        snapshot = _snapshot(channel, runtime, [g for g in groups if channel.shared or g.team_id == channel.team_id])
        if channel.shared:
            table.shared_implicit_groups.update(snapshot.implicit_groups)
            team_models = table.shared_models
        else:
            table.implicit_groups.setdefault(channel.team_id, set()).update(snapshot.implicit_groups)
            team_models = table.models.setdefault(channel.team_id, {})
        for visible, upstream in _visible_models(channel, runtime):
            names = [visible, f"{channel.prefix}/{visible}"] if channel.prefix else [visible]
            if channel.prefix and runtime.force_model_prefix and channel.prefix != visible:
                names = names[1:]
            for name in names:
                team_models.setdefault(name.lower(), []).append(Entry(snapshot, upstream, name))
    for route in PathRoute.objects.select_related("group"):
        group = route.group
        scope = GroupScope(group.name.lower(), group.pk, route.fallback, group.priority, group.strategy)
        table.path_routes.setdefault(route.team_id, {})[_normal_path(route.path)] = scope
    return table


def _visible_models(channel: Channel, runtime: RuntimeSettings) -> list[tuple[str, str]]:
    """(client-visible, upstream) names: the channel's own list, then the OAuth alias map for its kind."""
    pairs = channel.model_routes()
    excluded = runtime.oauth_excluded_models.get(channel.kind) or []
    aliases = runtime.oauth_model_alias.get(channel.kind) or []
    if not excluded and not aliases:
        return pairs
    result: list[tuple[str, str]] = []
    for visible, upstream in pairs:
        if any(wildcard_match(p, upstream) or wildcard_match(p, visible) for p in excluded):
            continue
        renamed = [a for a in aliases if isinstance(a, dict) and str(a.get("name", "")).lower() == upstream.lower()]
        if not renamed or visible != upstream:  # the channel's own alias wins over the global map
            result.append((visible, upstream))
            continue
        if any(a.get("fork") for a in renamed):
            result.append((visible, upstream))
        result += [(str(a["alias"]), upstream) for a in renamed if a.get("alias")]
    return result


def _snapshot(channel: Channel, runtime: RuntimeSettings, team_groups: list[ChannelGroup]) -> ChannelSnapshot:
    if channel.proxy is not None and channel.proxy.enabled:
        proxy = channel.proxy.url
    else:
        proxy = channel.proxy_url or runtime.proxy_url
    credentials = [(channel.secret, proxy, str(channel.pk))]
    credentials += [
        (k.secret, k.proxy_url or proxy, f"{channel.pk}k{k.pk}") for k in channel.extra_keys.all() if k.enabled
    ]
    prefix = channel.prefix.strip("/").lower()
    group_ids = {g.pk for g in channel.groups.all()}
    group_ids |= {g.pk for g in team_groups if _matches(g, prefix, channel.name.lower())}
    if prefix:
        implicit = frozenset({prefix})
    else:
        implicit = frozenset({DEFAULT_GROUP}) if runtime.include_default_group else frozenset()
    return ChannelSnapshot(
        id=channel.pk,
        team_id=channel.team_id,
        name=channel.name,
        kind=channel.kind,
        base_url=(channel.base_url or DEFAULT_BASE_URLS.get(channel.kind, "")).rstrip("/"),
        headers=dict(channel.headers),
        priority=channel.priority,
        group_ids=frozenset(group_ids),
        credentials=tuple(credentials),
        prefix=prefix,
        implicit_groups=implicit,
        disable_cooling=runtime.disable_cooling or bool(channel.options.get("disable-cooling")),
        transient_cooldown_s=runtime.transient_error_cooldown_seconds,
        shared=channel.shared,
    )


def _matches(group: ChannelGroup, prefix: str, name: str) -> bool:
    prefixes = {str(p).strip("/").lower() for p in group.match_prefixes or ()}
    names = {str(n).lower() for n in group.match_channels or ()}
    return bool(prefix and prefix in prefixes) or name in names


def _normal_path(path: str) -> str:
    return "/" + "/".join(segment for segment in path.lower().split("/") if segment)


# --- groups -----------------------------------------------------------------------------------


def resolve_group(current: RoutingTable, team_id: int, path: str) -> GroupScope | None:
    """The group a URL namespace (``pro``, ``/openai/pro``) names for this team, or None (→ 404).

    An exact path route wins; otherwise a single segment naming an explicit group (name or slug)
    or an implicit one (a channel prefix, or ``default``) scopes the request with fallback none.
    """
    normal = _normal_path(path)
    route = current.path_routes.get(team_id, {}).get(normal)
    if route is not None:
        return route
    segment = normal.strip("/")
    if not segment or "/" in segment:
        return None
    explicit = current.groups.get(team_id, {}).get(segment)
    if explicit is not None:
        return explicit
    if segment in current.implicit_groups.get(team_id, ()) or segment in current.shared_implicit_groups:
        return GroupScope(name=segment)
    return None


def group_allowed(key: KeySnapshot, scope: GroupScope) -> bool:
    """Whether a key limited to groups may use ``scope`` (else 403 ``channel_group_forbidden``)."""
    return not key.allowed_group_ids or scope.group_id in key.allowed_group_ids


def in_group(channel: ChannelSnapshot, scope: GroupScope) -> bool:
    """A channel belongs to a group by membership (explicit or by match rules) or by name (implicit)."""
    return (scope.group_id is not None and scope.group_id in channel.group_ids) or scope.name in (
        channel.implicit_groups
    )


def permitted(key: KeySnapshot, channel: ChannelSnapshot) -> bool:
    """Whether ``key`` may use ``channel``: same team (or a shared channel), inside its allowed channels and groups."""
    if channel.team_id != key.team_id and not channel.shared:
        return False
    if key.allowed_channel_ids and channel.id not in key.allowed_channel_ids:
        return False
    return not key.allowed_group_ids or bool(key.allowed_group_ids & channel.group_ids)


# --- choosing ---------------------------------------------------------------------------------


def candidates(
    current: RoutingTable,
    key: KeySnapshot,
    model: str,
    *,
    group: GroupScope | None = None,
    exclude: Collection[int] = (),
) -> list[Route]:
    """The routes this request may try, best first (see the module docstring).

    Raises a 404 ``RelayError`` when no channel the key may use serves ``model`` at all, and
    ``ModelCooldown`` (429) when every one not in ``exclude`` is cooling down. Returns ``[]`` when
    every channel has been tried (``exclude`` holds channel ids). Each call advances the
    round-robin state, so call it once per attempt round.
    """
    serving = [e for e in _serving(current, key.team_id, model, group) if permitted(key, e.channel)]
    pool = serving
    if group is not None:
        pool = [e for e in serving if in_group(e.channel, group)]
        if group.fallback == PathRoute.Fallback.DEFAULT and not _available(pool, exclude):
            pool = serving
    if not pool:
        raise RelayError(
            404, f"The model '{model}' does not exist or you do not have access to it.", code="model_not_found"
        )
    untried = [e for e in pool if e.channel.id not in exclude]
    ready = _available(untried, ())
    if not ready:
        wait = _soonest(untried)
        if wait is not None:
            raise ModelCooldown(model, wait)
        return []
    if group is not None and group.strategy != ChannelGroup.Strategy.WEIGHTED:
        return _tiered(ready, group.strategy, (key.team_id, model.lower(), _scope_key(key, group)))
    if group is not None or key.allowed_group_ids:
        state_key = (key.team_id, model.lower(), _scope_key(key, group))
        return _weighted(ready, _scope_ids(key, group), current.group_priority, state_key)
    return _tiered(ready, current.strategy, (key.team_id, model.lower()))


def choose(current: RoutingTable, key: KeySnapshot, model: str, *, group: GroupScope | None = None) -> Route:
    """The first route for this request: 404 when nothing serves ``model``, 429 when all are cooling."""
    routes = candidates(current, key, model, group=group)
    if not routes:  # unreachable without ``exclude``; kept so the contract holds
        raise RelayError(404, f"The model '{model}' is not available.", code="model_not_found")
    return routes[0]


def soonest_cooldown(
    current: RoutingTable, key: KeySnapshot, model: str, *, group: GroupScope | None = None
) -> float | None:
    """Seconds until the first cooling candidate frees up (the retry loop's wait), or None."""
    entries = [e for e in _serving(current, key.team_id, model, group) if permitted(key, e.channel)]
    if group is not None and group.fallback != PathRoute.Fallback.DEFAULT:
        entries = [e for e in entries if in_group(e.channel, group)]
    return _soonest(entries)


def _soonest(entries: Iterable[Entry]) -> float | None:
    """Seconds until the first cooling credential of ``entries`` frees up, or None when none cools."""
    waits = [w for e in entries for r in e.routes if (w := cooldowns.cooling(r.credential, e.upstream_model))]
    return min(waits) if waits else None


def _serving(current: RoutingTable, team_id: int, model: str, group: GroupScope | None) -> list[Entry]:
    """Entries for ``model``; inside a group also those registered as ``<group>/model``."""
    entries = current.entries(team_id, model)
    if group is None or group.name == DEFAULT_GROUP:
        return entries
    extra = current.entries(team_id, f"{group.name}/{model}")
    if not extra:
        return entries
    seen = {(e.channel.id, e.upstream_model) for e in entries}
    return entries + [e for e in extra if (e.channel.id, e.upstream_model) not in seen]


def _available(entries: Iterable[Entry], exclude: Collection[int]) -> list[Entry]:
    """Entries not tried, with only their credentials that are not cooling (entries with none are
    dropped); one clock read, and no lookups at all when nothing cools."""
    cooling = cooldowns.store().cooling_check()
    if cooling is None:
        return [e for e in entries if e.channel.id not in exclude]
    ready: list[Entry] = []
    for entry in entries:
        if entry.channel.id in exclude:
            continue
        routes = tuple(r for r in entry.routes if not cooling(r.credential, entry.upstream_model))
        if len(routes) == len(entry.routes):
            ready.append(entry)
        elif routes:
            ready.append(replace(entry, routes=routes))
    return ready


def _routes(entries: Iterable[Entry]) -> list[Route]:
    return [route for e in entries for route in e.routes]


def _tiered(entries: list[Entry], strategy: str, cursor_key: tuple[object, ...]) -> list[Route]:
    """Priority tiers, highest first; the top tier rotated by the round-robin cursor."""
    tiers: dict[int, list[Entry]] = defaultdict(list)
    for entry in entries:
        tiers[entry.channel.priority].append(entry)
    ordered: list[Route] = []
    for rank, priority in enumerate(sorted(tiers, reverse=True)):
        routes = _routes(sorted(tiers[priority], key=lambda e: e.channel.id))
        if rank == 0 and strategy != RuntimeSettings.Strategy.FILL_FIRST and len(routes) > 1:
            turn = next(_cursors[cursor_key]) % len(routes)
            routes = routes[turn:] + routes[:turn]
        ordered += routes
    return ordered


def _scope_ids(key: KeySnapshot, group: GroupScope | None) -> list[int]:
    if group is not None:
        return [group.group_id] if group.group_id is not None else []
    return sorted(key.allowed_group_ids)


def _scope_key(key: KeySnapshot, group: GroupScope | None) -> str:
    if group is not None:
        return f"group:{group.name}"
    return "keys:" + ",".join(str(i) for i in sorted(key.allowed_group_ids))


def weight_of(channel: ChannelSnapshot, scope_ids: list[int], group_priority: dict[int, int]) -> int:
    """A scoped pick's weight: the channel's own priority, else the best of its in-scope groups'.

    Priority 0 means "not set" and weighs 1; a negative priority weighs 0 (tried only last).
    """
    priority = channel.priority
    if priority == 0:
        priority = max((group_priority.get(g, 0) for g in scope_ids if g in channel.group_ids), default=0)
    return priority if priority > 0 else (1 if priority == 0 else 0)


def _weighted(
    entries: list[Entry], scope_ids: list[int], group_priority: dict[int, int], state_key: tuple[object, ...]
) -> list[Route]:
    """Smooth weighted round-robin (nginx): the winner first, then the rest by weight, then weight 0."""
    slots = sorted(
        ((route, weight_of(route.channel, scope_ids, group_priority)) for route in _routes(entries)),
        key=lambda slot: (slot[0].channel.id, slot[0].credential),
    )
    live = [(route, weight) for route, weight in slots if weight > 0]
    if not live:
        return [route for route, _ in slots]
    scores = _weights[state_key]
    total = sum(weight for _, weight in live)
    best, best_score = live[0][0], -math.inf
    for route, weight in live:
        slot = route.credential
        scores[slot] = scores.get(slot, 0) + weight
        if scores[slot] > best_score:
            best, best_score = route, scores[slot]
    scores[best.credential] -= total
    rest = sorted((slot for slot in live if slot[0] is not best), key=lambda slot: -slot[1])
    return [best, *(route for route, _ in rest), *(route for route, weight in slots if weight == 0)]


def models_for(
    current: RoutingTable, key: KeySnapshot, *, group: GroupScope | None = None
) -> list[tuple[str, ChannelSnapshot]]:
    """The models ``key`` may call (inside ``group`` when given), each with a channel that serves it."""
    found: list[tuple[str, ChannelSnapshot]] = []
    for name in current.model_names(key.team_id):
        entries = current.entries(key.team_id, name)
        usable = [
            (e.name, e.channel)
            for e in entries
            if permitted(key, e.channel) and (group is None or in_group(e.channel, group))
        ]
        if usable and key.allows_model(usable[0][0]):
            found.append(usable[0])
    return found
