"""Which (credential, upstream model) pairs are cooling down after a failure, shared by every process.

A credential is one upstream key: a channel's own (id ``"12"``) or one of its extra keys (``"12k3"``,
``api-key-entries`` of an OpenAI-compatible provider), so a 429 on one key leaves the others in use.

``mark_failure(route, err)`` applies the cool-down table of the providers spec (§14.2): 401/402/403
suspend the pair for 30 min, 404 for 12 h, 429 until the upstream's retry-after or an exponential
backoff (1 s, 2 s, 4 s … capped at 30 min, the level remembered per pair), 408/5xx and other
statuses for ``transient-error-cooldown-seconds`` (0 = 60 s, -1 = none); request-scoped errors
(400/409/413/422, context-length and similar codes) never cool anything. An error the executor
marks credential-scoped (Claude's unified 5 h / 7 d windows, §5.4) cools every model of the
credential to the same deadline. A deadline is never shortened by a later, shorter penalty.
``mark_success(route)`` clears the pair.

Storage. With ``REDIS_URL`` each pair is a Redis string ``relay:cd:{credential}:{model}`` holding
"<deadline> <backoff level>", kept until 30 min past its deadline so the level survives, and a
sorted set ``relay:cd`` indexes the pairs by deadline. A write is one Lua script. Without Redis the
same state lives in this process only (correct for a single process).

The request path never waits for Redis per candidate: ``cooling()`` reads an in-process mirror.
The mirror is refreshed by ``arefresh()`` (called from ``scheduler.table()``) at most every
``CLIRELAY_COOLDOWN_REFRESH_SECONDS`` (1 s): one ``ZRANGEBYSCORE`` returns every pair that is
cooling or still remembers a level, and only one request per process per interval pays that
round trip. A failure this process marks is in its mirror at once; other processes see it within
one interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import redis
import redis.asyncio as aioredis
from django.conf import settings

if TYPE_CHECKING:
    from channels_app.executors.base import UpstreamError

log = logging.getLogger(__name__)

Pair = tuple[str, str]  # (credential, upstream model)
WHOLE_CREDENTIAL = "*"  # the model of a pair that cools every model of a credential
_CREDENTIAL = re.compile(r"\d+(?:k\d+)?")

SUSPENDED_SECONDS = 30 * 60  # 401, 402, 403, invalid_grant
NOT_FOUND_SECONDS = 12 * 60 * 60  # 404, "model not supported"
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30 * 60
TRANSIENT_DEFAULT_SECONDS = 60
_MAX_LEVEL = 12  # 2**11 s already exceeds the cap; stop counting there
_RETENTION_SECONDS = BACKOFF_MAX_SECONDS  # how long a backoff level outlives its deadline
_REDIS_PAUSE_SECONDS = 5.0  # after a Redis error, work in-process this long instead of waiting on timeouts
_REDIS_TIMEOUT_SECONDS = 0.5

# Bodies that say the request itself is at fault: no cool-down, no rotation (§14.2).
REQUEST_SCOPED_CODES = (
    "context_length_exceeded",
    "message_too_big",
    "invalid_request_error",
    "previous_response_not_found",
    "cyber_policy",
    "invalid_prompt",
    "invalid_value",
    "unsupported_value",
    "string_above_max_length",
)
# "invalid_request_error" counts only with a 400 (a status already request-scoped): OpenAI's 401 and
# 404 bodies carry that type too, and still mean "try another channel".
_SCOPED_BODY_CODES = tuple(code for code in REQUEST_SCOPED_CODES if code != "invalid_request_error")
# 400/422 bodies that mean "this credential cannot serve this model": treated like a 404.
_MODEL_UNSUPPORTED = (
    "model_not_supported",
    "model not supported",
    "model is not supported",
    "unsupported model",
    "model is unavailable",
    "model unavailable",
    "not available for your plan",
    "not available for your account",
)
_REQUEST_SCOPED_STATUSES = frozenset({400, 409, 413, 422})


class RouteLike(Protocol):
    """What a cool-down needs to know about a route (``scheduler.Route`` is one)."""

    @property
    def upstream_model(self) -> str: ...

    @property
    def credential(self) -> str: ...

    @property
    def channel(self) -> ChannelLike: ...


class ChannelLike(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def disable_cooling(self) -> bool: ...

    @property
    def transient_cooldown_s(self) -> int: ...


@dataclass(slots=True, frozen=True)
class Penalty:
    """How long a failure keeps a pair out: ``seconds``, or the exponential backoff when ``backoff``."""

    reason: str
    seconds: float = 0.0
    backoff: bool = False


def penalty_for(err: UpstreamError, *, transient_seconds: int = 0) -> Penalty | None:
    """The cool-down an upstream failure earns (§14.2), or None when the request itself was at fault."""
    status = err.upstream_status or err.status
    text = f"{err.message} {err.detail}".lower()
    if status < 400 or status == 499 or err.scope == "request":
        return None
    if status in (400, 401) and "invalid_grant" in text:
        return Penalty("unauthorized", SUSPENDED_SECONDS)
    if status in (400, 422) and any(phrase in text for phrase in _MODEL_UNSUPPORTED):
        return Penalty("model_not_supported", NOT_FOUND_SECONDS)
    if status in _REQUEST_SCOPED_STATUSES or any(code in text for code in _SCOPED_BODY_CODES):
        return None
    if status == 401:
        return Penalty("unauthorized", SUSPENDED_SECONDS)
    if status in (402, 403):
        return Penalty("payment_required", SUSPENDED_SECONDS)
    if status == 404:
        return Penalty("not_found", NOT_FOUND_SECONDS)
    if status == 429:
        if err.cooldown_s is not None and err.cooldown_s > 0:
            return Penalty("quota", err.cooldown_s)
        return Penalty("quota", backoff=True)
    if transient_seconds < 0:
        return None
    return Penalty("transient", transient_seconds or TRANSIENT_DEFAULT_SECONDS)


def is_request_scoped(err: UpstreamError) -> bool:
    """Whether the request itself was at fault: stop, without trying another channel (§14.3 step 2)."""
    return penalty_for(err) is None


def backoff_seconds(level: int) -> float:
    """The 429 backoff at ``level`` (0-based): 1 s, 2 s, 4 s … at most 30 min."""
    return min(BACKOFF_BASE_SECONDS * 2 ** min(level, _MAX_LEVEL), BACKOFF_MAX_SECONDS)


# KEYS: pair key, index. ARGV: index member, now, "backoff" | "fixed", fixed seconds, base, cap, max level,
# retention. Returns the pair's deadline as a string (Lua numbers come back truncated to integers).
_MARK_SCRIPT = """
local current = redis.call('GET', KEYS[1])
local deadline, level = 0, 0
if current then
  local d, l = string.match(current, '^(%S+) (%S+)$')
  deadline, level = tonumber(d) or 0, tonumber(l) or 0
end
local now = tonumber(ARGV[2])
local seconds = tonumber(ARGV[4])
if ARGV[3] == 'backoff' then
  seconds = math.min(tonumber(ARGV[5]) * 2 ^ math.min(level, tonumber(ARGV[7])), tonumber(ARGV[6]))
  level = math.min(level + 1, tonumber(ARGV[7]))
end
local until_ = math.max(deadline, now + seconds)
local keep_ms = math.ceil((until_ - now + tonumber(ARGV[8])) * 1000)
redis.call('SET', KEYS[1], string.format('%.3f %d', until_, level), 'PX', keep_ms)
redis.call('ZADD', KEYS[2], until_, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[8]))
return string.format('%.3f', until_)
"""


# Returns [member, deadline, member, deadline, ...]: a script reply skips redis-py's per-pair float
# conversion, which costs more than the round trip once a few hundred pairs are cooling.
_READ_SCRIPT = "return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')"


@dataclass(slots=True)
class _Connection:
    """A Redis client and the two scripts registered on it."""

    client: Any
    mark: Any
    read: Any

    @classmethod
    def of(cls, client: Any) -> _Connection:
        return cls(client, client.register_script(_MARK_SCRIPT), client.register_script(_READ_SCRIPT))


class CooldownStore:
    """Cool-down state: in Redis when ``redis_url`` is set (mirrored here), else in this process."""

    def __init__(
        self,
        redis_url: str = "",
        *,
        namespace: str = "relay",
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.refresh_seconds = refresh_seconds
        self.clock = clock  # wall clock: deadlines are shared between machines
        self._index = f"{namespace}:cd"
        self._deadlines: dict[Pair, float] = {}  # the truth in-process, the mirror with Redis
        self._levels: dict[Pair, int] = {}  # in-process mode only
        self._lock = threading.Lock()
        self._refreshed = -math.inf
        self._refreshing = False
        self._seq = 0  # counts local writes, so a refresh in flight does not undo them
        self._local: dict[Pair, tuple[int, float | None]] = {}
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = weakref.WeakKeyDictionary()
        self._sync_conn: _Connection | None = None
        self._redis_down_until = -math.inf  # monotonic

    # --- reading: no I/O ---------------------------------------------------------------------

    def cooling(self, credential: str | int, model: str) -> float | None:
        """Seconds until ``model`` on ``credential`` may be used again, or None when it may now."""
        deadlines = self._deadlines
        if not deadlines:
            return None
        credential = str(credential)
        until = max(deadlines.get((credential, model), 0.0), deadlines.get((credential, WHOLE_CREDENTIAL), 0.0))
        remaining = until - self.clock()
        return remaining if remaining > 0 else None

    def cooling_check(self) -> Callable[[str, str], bool] | None:
        """A fast "is this pair cooling now?" test for one selection (one clock read), or None when
        nothing is known at all, so the caller can skip per-candidate lookups."""
        deadlines = self._deadlines
        if not deadlines:
            return None
        now = self.clock()

        def check(credential: str, model: str) -> bool:
            return (
                deadlines.get((credential, model), 0.0) > now
                or deadlines.get((credential, WHOLE_CREDENTIAL), 0.0) > now
            )

        return check

    def snapshot(self) -> dict[Pair, float]:
        """Every pair cooling now, with its remaining seconds (for the admin and tests)."""
        now = self.clock()
        return {pair: until - now for pair, until in list(self._deadlines.items()) if until > now}

    # --- writing ----------------------------------------------------------------------------

    def mark_failure(self, route: RouteLike, err: UpstreamError, *, whole_credential: bool = False) -> float | None:
        """Cool the route's pair down as ``err`` deserves; the seconds it now cools, or None."""
        plan = self._plan(route, err, whole_credential)
        if plan is None:
            return None
        pair, penalty = plan
        if not self._redis_usable():
            return self._mark_local(pair, penalty)
        try:
            until = float(self._sync().mark(keys=self._keys(pair), args=self._script_args(pair, penalty)))
        except redis.RedisError as exc:
            self._redis_failed("write", exc)
            return self._mark_local(pair, penalty)
        return self._remember(pair, until)

    async def amark_failure(
        self, route: RouteLike, err: UpstreamError, *, whole_credential: bool = False
    ) -> float | None:
        """``mark_failure`` for the event loop: one Redis round trip when Redis is configured."""
        plan = self._plan(route, err, whole_credential)
        if plan is None:
            return None
        pair, penalty = plan
        if not self._redis_usable():
            return self._mark_local(pair, penalty)
        try:
            until = float(await self._async().mark(keys=self._keys(pair), args=self._script_args(pair, penalty)))
        except redis.RedisError as exc:
            self._redis_failed("write", exc)
            return self._mark_local(pair, penalty)
        return self._remember(pair, until)

    def mark_success(self, route: RouteLike) -> None:
        """Clear the route's pair (and a whole-credential cool-down); no I/O when nothing is known."""
        pairs = self._known_pairs(route)
        if not pairs:
            return
        self._forget(pairs)
        if self._redis_usable():
            try:
                pipe = self._sync().client.pipeline(transaction=False)
                pipe.delete(*(self._key(pair) for pair in pairs))
                pipe.zrem(self._index, *(self._member(pair) for pair in pairs))
                pipe.execute()
            except redis.RedisError as exc:
                self._redis_failed("reset", exc)

    async def amark_success(self, route: RouteLike) -> None:
        """``mark_success`` for the event loop: a round trip only when the pair had state."""
        pairs = self._known_pairs(route)
        if not pairs:
            return
        self._forget(pairs)
        if self._redis_usable():
            try:
                pipe = self._async().client.pipeline(transaction=False)
                pipe.delete(*(self._key(pair) for pair in pairs))
                pipe.zrem(self._index, *(self._member(pair) for pair in pairs))
                await pipe.execute()
            except redis.RedisError as exc:
                self._redis_failed("reset", exc)

    # --- the mirror -------------------------------------------------------------------------

    async def arefresh(self, *, force: bool = False) -> None:
        """Bring the mirror up to date: one round trip at most every ``refresh_seconds``."""
        if not self._due(force):
            return
        self._refreshing = True
        try:
            start = self._seq
            if self._redis_usable():
                rows = await self._async().read(keys=[self._index], args=[self._horizon()])
                self._install(rows, start)
            elif not self.redis_url:
                self._prune()
        except redis.RedisError as exc:
            self._redis_failed("refresh", exc)
        finally:
            self._refreshed = time.monotonic()
            self._refreshing = False

    def refresh(self, *, force: bool = False) -> None:
        """``arefresh`` for synchronous callers (tests, management commands)."""
        if not self._due(force):
            return
        try:
            start = self._seq
            if self._redis_usable():
                rows = self._sync().read(keys=[self._index], args=[self._horizon()])
                self._install(rows, start)
            elif not self.redis_url:
                self._prune()
        except redis.RedisError as exc:
            self._redis_failed("refresh", exc)
        finally:
            self._refreshed = time.monotonic()

    def clear(self) -> None:
        """Forget every cool-down here and, with Redis, in this namespace (tests, admin action)."""
        with self._lock:
            self._deadlines, self._levels, self._local = {}, {}, {}
        if self.redis_url:
            client = self._sync().client
            keys = list(client.scan_iter(match=f"{self.namespace}:cd:*", count=500))
            client.delete(self._index, *keys)

    async def aclose(self) -> None:
        """Close this event loop's Redis client (the end of a test or of a worker's loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        conn = self._aclients.pop(loop, None)
        if conn is not None:
            await conn.client.aclose()

    def close(self) -> None:
        """Close the synchronous Redis client."""
        if self._sync_conn is not None:
            self._sync_conn.client.close()
            self._sync_conn = None

    # --- internals --------------------------------------------------------------------------

    def _plan(self, route: RouteLike, err: UpstreamError, whole_credential: bool) -> tuple[Pair, Penalty] | None:
        channel = route.channel
        if channel.disable_cooling:
            return None
        penalty = penalty_for(err, transient_seconds=channel.transient_cooldown_s)
        if penalty is None:
            return None
        whole = whole_credential or err.scope == "credential"
        return (route.credential, WHOLE_CREDENTIAL if whole else route.upstream_model), penalty

    def _mark_local(self, pair: Pair, penalty: Penalty) -> float:
        now = self.clock()
        with self._lock:
            level = self._levels.get(pair, 0)
            seconds = penalty.seconds
            if penalty.backoff:
                seconds = backoff_seconds(level)
                self._levels[pair] = min(level + 1, _MAX_LEVEL)
            until = max(self._deadlines.get(pair, 0.0), now + seconds)
        return self._remember(pair, until)

    def _remember(self, pair: Pair, until: float) -> float:
        with self._lock:
            until = max(self._deadlines.get(pair, 0.0), until)
            self._deadlines[pair] = until
            self._seq += 1
            self._local[pair] = (self._seq, until)
        return until - self.clock()

    def _known_pairs(self, route: RouteLike) -> list[Pair]:
        deadlines = self._deadlines
        if not deadlines:
            return []
        credential = route.credential
        return [p for p in ((credential, route.upstream_model), (credential, WHOLE_CREDENTIAL)) if p in deadlines]

    def _forget(self, pairs: list[Pair]) -> None:
        with self._lock:
            for pair in pairs:
                self._deadlines.pop(pair, None)
                self._levels.pop(pair, None)
                self._seq += 1
                self._local[pair] = (self._seq, None)

    def _redis_usable(self) -> bool:
        return bool(self.redis_url) and time.monotonic() >= self._redis_down_until

    def _redis_failed(self, action: str, exc: redis.RedisError) -> None:
        """Log, and work in-process for a few seconds rather than make every request wait on timeouts."""
        self._redis_down_until = time.monotonic() + _REDIS_PAUSE_SECONDS
        log.warning("cooldowns: Redis %s failed (%s); in-process only for %.0f s", action, exc, _REDIS_PAUSE_SECONDS)

    def _due(self, force: bool) -> bool:
        if force:
            return True
        return not self._refreshing and time.monotonic() - self._refreshed >= self.refresh_seconds

    def _install(self, rows: list[Any], start: int) -> None:
        """Replace the mirror with Redis's view (a flat member, deadline list), then re-apply local
        writes made since ``start``: Redis may have answered before they landed."""
        fresh: dict[Pair, float] = {}
        for member, score in zip(rows[0::2], rows[1::2], strict=True):
            text = member.decode() if isinstance(member, bytes) else str(member)
            credential, _, model = text.partition(":")
            if _CREDENTIAL.fullmatch(credential):
                fresh[(credential, model)] = float(score)
        with self._lock:
            for pair, (seq, until) in self._local.items():
                if seq <= start:
                    continue
                if until is None:
                    fresh.pop(pair, None)
                else:
                    fresh[pair] = max(fresh.get(pair, 0.0), until)
            self._local = {pair: entry for pair, entry in self._local.items() if entry[0] > start}
            self._deadlines = fresh

    def _prune(self) -> None:
        """In-process mode: drop pairs whose deadline and backoff memory have both run out."""
        horizon = self.clock() - _RETENTION_SECONDS
        with self._lock:
            stale = [pair for pair, until in self._deadlines.items() if until < horizon]
            for pair in stale:
                self._deadlines.pop(pair, None)
                self._levels.pop(pair, None)
            self._local = {}

    def _member(self, pair: Pair) -> str:
        return f"{pair[0]}:{pair[1]}"

    def _key(self, pair: Pair) -> str:
        return f"{self.namespace}:cd:{pair[0]}:{pair[1]}"

    def _keys(self, pair: Pair) -> tuple[str, str]:
        return self._key(pair), self._index

    def _script_args(self, pair: Pair, penalty: Penalty) -> tuple[str, ...]:
        return (
            self._member(pair),
            repr(self.clock()),
            "backoff" if penalty.backoff else "fixed",
            repr(float(penalty.seconds)),
            repr(BACKOFF_BASE_SECONDS),
            repr(float(BACKOFF_MAX_SECONDS)),
            str(_MAX_LEVEL),
            repr(float(_RETENTION_SECONDS)),
        )

    def _async(self) -> _Connection:
        """One asyncio client per event loop: a client's connections belong to the loop that made them."""
        loop = asyncio.get_running_loop()
        conn = self._aclients.get(loop)
        if conn is None:
            client = aioredis.Redis.from_url(
                self.redis_url, socket_timeout=_REDIS_TIMEOUT_SECONDS, socket_connect_timeout=_REDIS_TIMEOUT_SECONDS
            )
            conn = self._aclients[loop] = _Connection.of(client)
        return conn

    def _sync(self) -> _Connection:
        if self._sync_conn is None:
            client = redis.Redis.from_url(
                self.redis_url, socket_timeout=_REDIS_TIMEOUT_SECONDS, socket_connect_timeout=_REDIS_TIMEOUT_SECONDS
            )
            self._sync_conn = _Connection.of(client)
        return self._sync_conn

    def _horizon(self) -> str:
        """The ZRANGEBYSCORE minimum: pairs still cooling or still remembering a backoff level."""
        return f"({self.clock() - _RETENTION_SECONDS!r}"


_store: CooldownStore | None = None
_store_lock = threading.Lock()


def store() -> CooldownStore:
    """The process's store, built from settings on first use."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = CooldownStore(
                    settings.REDIS_URL,
                    refresh_seconds=getattr(settings, "CLIRELAY_COOLDOWN_REFRESH_SECONDS", 1.0),
                )
    return _store


def use(replacement: CooldownStore | None) -> None:
    """Swap the process's store (tests); None rebuilds it from settings on next use."""
    global _store
    _store = replacement


def cooling(credential: str | int, model: str) -> float | None:
    """Seconds until ``model`` on ``credential`` is usable again, or None; reads memory only."""
    return store().cooling(credential, model)


def mark_failure(route: RouteLike, err: UpstreamError, *, whole_credential: bool = False) -> float | None:
    return store().mark_failure(route, err, whole_credential=whole_credential)


async def amark_failure(route: RouteLike, err: UpstreamError, *, whole_credential: bool = False) -> float | None:
    return await store().amark_failure(route, err, whole_credential=whole_credential)


def mark_success(route: RouteLike) -> None:
    store().mark_success(route)


async def amark_success(route: RouteLike) -> None:
    await store().amark_success(route)


async def arefresh(*, force: bool = False) -> None:
    await store().arefresh(force=force)


def refresh(*, force: bool = False) -> None:
    store().refresh(force=force)
