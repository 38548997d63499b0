"""Quotas and rate limits of client keys (D6, D7): checked atomically, shared by every process.

``admission = await admit(key, request_id)`` runs once per client request, after the model and
group checks and before routing. It returns an ``Admission`` or raises a 429 ``RelayError`` whose
code names the limit and whose ``retry_after`` follows D7; ``await admission.release()`` gives the
concurrency slot back when the response is over (streams included). ``accrue_batch(logs)`` runs
in the usage recorder's drainer thread after each batch of attempts is stored: it adds their
tokens and cost to the TPM window and to the lifetime counters, so no request waits for it.

A key without limits costs nothing: ``admit`` returns at once, without Redis or a lock.

**With ``REDIS_URL``** one Lua script, one round trip, checks every limit and records the
admission only if all pass, so processes on any number of hosts share exact counters. Keys (the
braces are a Redis Cluster hash tag: one key's counters share a slot, as a multi-key script needs)::

    relay:cc:{id}                   ZSET in-flight request_ids, score = lease expiry (ms)
    relay:rl:{id}:rpm               ZSET admitted request_ids, score = admission (ms); 60 s window
    relay:rl:{id}:tpm               HASH epoch second -> tokens reported; 60 s window
    relay:q:{id}:day:YYYYMMDD       INT  client requests on that local (TIME_ZONE) date, TTL 48 h
    relay:q:{id}:total              INT  client requests ever                 } TTL 30 days from
    relay:q:{id}:tokens             INT  tokens ever (every attempt)          } their seeding, then
    relay:q:{id}:spend_micro        INT  cost ever, micro-USD (every attempt) } seeded again

Checks run in this order and the first that fails names the rejection: concurrency, RPM, TPM,
daily, total, tokens, spending -- the short windows first, the reference order (RPM, TPM, daily,
total, spending) for the rest, with concurrency (which the reference never enforced) ahead of all
and the token quota (ours) beside the total quota. An admission takes a concurrency lease, an RPM
slot and one unit of the daily and total counters; only the counters of limits the key has are
touched. Token quota, TPM and spending are checked before a request and accrued after it, so the
request that crosses one completes and the next is rejected (D4). Times are the Redis server's
(``TIME``), so hosts with skewed clocks share one window.

The database is the source of truth for the quota counters (``ApiKeyUsageCounter``, and the
daily count from the distinct ``request_id``s logged since local midnight). When one the key needs
is missing in Redis, the script says which; they are seeded with ``SET NX`` and the script runs
again -- extra round trips only then. Saving a key's limits deletes its counters so they are seeded
afresh. Seeds cannot see requests still in flight or a batch accrued in the instant between the
database read and the ``SET``: a seed may lag by that much.

Concurrency leases expire after ``CONCURRENCY_LEASE_SECONDS`` (default 600), so a process that
dies cannot hold a slot. Nothing renews a lease by itself: a response that lasts longer gives its
slot up early unless the relay calls ``Admission.refresh()`` now and then (every 60 s, say).

**Without ``REDIS_URL``** the same checks run in process (``accounts.local_limits``), with the
quota counters read from the database once per key; correct for one process only, and a system
check says so when ``DEBUG`` is off. **If Redis is unreachable** the limiter logs an error and uses
the in-process path for ``REDIS_RETRY_SECONDS``, then tries Redis again: no limit is skipped, but
each process then enforces the windows on its own (quota counters start from the database), so N
processes may together admit up to N times a limit until Redis answers. The quota counters of keys
that moved in process meanwhile are deleted from Redis when it answers again, so they are seeded
from the database rather than trusted. Each event loop's client has a bounded pool
(``REDIS_POOL_SIZE``); a burst waits for a connection rather than failing over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from redis.exceptions import RedisError

from accounts.access import KeySnapshot
from accounts.local_limits import (
    CONCURRENCY,
    DAILY,
    RPM,
    SPENDING,
    TOKENS,
    TOTAL,
    TPM,
    LocalLimits,
    Usage,
    needs_quota,
)
from gateway.errors import RelayError
from gateway.fastpath import closes_old_connections

log = logging.getLogger(__name__)

DAY_TTL = 48 * 3600
COUNTER_TTL = 30 * 86400  # lifetime counters are seeded from the database again this long after the last seed
NEVER_RESETS = 86400  # Retry-After of the quotas that only an admin can lift (D7)
REDIS_RETRY_SECONDS = 5.0
REDIS_POOL_SIZE = 64  # connections per event loop; admissions beyond wait for one
_CONNECT_TIMEOUT, _COMMAND_TIMEOUT, _POOL_WAIT = 2.0, 2.0, 5.0
_ADMITTED, _REJECTED, _SEED = 0, 1, 2
# The scripts, next to this module; redis-py sends each by SHA (EVALSHA) and loads it on first use.
_LUA = Path(__file__).with_name("lua")
ADMIT_LUA = (_LUA / "admit.lua").read_text()
ACCRUE_LUA = (_LUA / "accrue.lua").read_text()
REFRESH_LUA = (_LUA / "refresh.lua").read_text()
_LIMIT_FIELDS = frozenset(
    {
        "daily_request_limit",
        "total_request_limit",
        "token_quota",
        "spending_limit_usd",
        "rpm_limit",
        "tpm_limit",
        "concurrency_limit",
    }
)


class Admission:
    """A request let through the limits. ``release()`` when its response is over (idempotent)."""

    __slots__ = ("_limiter", "_via_redis", "key_id", "request_id")

    def __init__(self, limiter: Limiter | None, key_id: int, request_id: str, *, via_redis: bool) -> None:
        self._limiter = limiter  # None: no concurrency lease to give back
        self._via_redis = via_redis
        self.key_id = key_id
        self.request_id = request_id

    @property
    def holds_slot(self) -> bool:
        """Whether ``release()`` has a concurrency lease to give back."""
        return self._limiter is not None

    async def release(self) -> None:
        """Give the concurrency slot back; later calls do nothing."""
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            await limiter.release(self.key_id, self.request_id, via_redis=self._via_redis)

    async def refresh(self) -> bool:
        """Extend the concurrency lease of a long response; False when it is no longer held."""
        if self._limiter is None:
            return False
        return await self._limiter.refresh(self.key_id, self.request_id, via_redis=self._via_redis)


NO_LIMITS = Admission(None, 0, "", via_redis=False)


class StoredAttempt(Protocol):
    """What ``accrue_batch`` reads of a stored attempt (a ``RequestLog`` row is one)."""

    @property
    def api_key_id(self) -> int | None: ...

    @property
    def attempt(self) -> int: ...

    @property
    def total_tokens(self) -> int: ...

    @property
    def cost(self) -> Decimal: ...


@dataclass(slots=True)
class Accrual:
    """Usage of one key in one recorder batch."""

    requests: int = 0
    tokens: int = 0
    cost: Decimal = field(default_factory=Decimal)

    @property
    def spend_micro(self) -> int:
        return to_micro(self.cost)


class Limiter:
    """Every limit of every key, in Redis when ``redis_url`` is set, else in this process."""

    def __init__(
        self,
        redis_url: str = "",
        *,
        prefix: str = "relay:",
        lease_seconds: int | None = None,
        usage_loader: Callable[[int, dt.datetime], Usage] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.lease_seconds = lease_seconds or settings.CONCURRENCY_LEASE_SECONDS
        # (key_id, local midnight) -> Usage, from the database; tests and the bench swap it.
        self.load_usage = usage_loader or load_usage
        self.local = LocalLimits()
        self.fallbacks = 0  # admissions decided in process because Redis failed
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any, Any]]
        self._clients = weakref.WeakKeyDictionary()
        self._sync: tuple[redis.Redis, Any] | None = None
        self._sync_lock = threading.Lock()
        self._down_until = 0.0
        self._redis_ok = True
        self._dirty: set[int] = set()  # keys whose counters moved in process while Redis was down

    # --- admission ----------------------------------------------------------------------------

    async def admit(self, key: KeySnapshot, request_id: str | UUID) -> Admission:
        """Admit one client request of ``key`` or raise the 429 ``RelayError`` of the first limit hit."""
        if not key.limited:
            return NO_LIMITS
        rid = str(request_id)
        if self.redis_url and time.monotonic() >= self._down_until:
            try:
                return await self._admit_redis(key, rid)
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        return await self._admit_local(key, rid)

    async def _admit_redis(self, key: KeySnapshot, rid: str) -> Admission:
        client, admit_script, _ = self._async_redis()
        if self._dirty:
            await self._reseed_dirty(client)
        names = self._names(key.id)
        args = (
            rid,
            self.lease_seconds * 1000,
            key.concurrency_limit,
            key.rpm_limit,
            key.tpm_limit,
            key.daily_request_limit,
            key.total_request_limit,
            key.token_quota,
            key.spending_limit_micro,
        )
        for _ in range(3):
            status, detail, retry_after, current = await admit_script(keys=names, args=args)
            self._redis_ok = True
            if status == _ADMITTED:
                return Admission(self if key.concurrency_limit else None, key.id, rid, via_redis=True)
            if status == _REJECTED:
                raise rejection(key, detail, retry_after, current)
            await self._seed(client, key.id, names, detail)
        raise RedisError("quota counters vanished while being seeded")

    async def _seed(self, client: Any, key_id: int, names: list[str], missing: int) -> None:
        usage = await sync_to_async(self.load_usage)(key_id, local_midnight())
        pipe = client.pipeline(transaction=False)
        values = (
            (1, usage.today, DAY_TTL),
            (2, usage.requests, COUNTER_TTL),
            (4, usage.tokens, COUNTER_TTL),
            (8, usage.spend_micro, COUNTER_TTL),
        )
        for position, (bit, value, ttl) in enumerate(values, start=3):
            if missing & bit:
                pipe.set(names[position], value, ex=ttl, nx=True)
        await pipe.execute()

    async def _admit_local(self, key: KeySnapshot, rid: str) -> Admission:
        day = local_day()
        if needs_quota(key) and not self.local.has_quota(key.id):
            usage = await sync_to_async(self.load_usage)(key.id, local_midnight())
            self.local.install(key.id, day, usage)
        verdict = self.local.admit(key, rid, day, self.lease_seconds)
        if verdict is not None:
            raise rejection(key, *verdict)
        if self.redis_url:
            self.fallbacks += 1
            if needs_quota(key):
                with self.local.lock:
                    self._dirty.add(key.id)
        return Admission(self if key.concurrency_limit else None, key.id, rid, via_redis=False)

    async def release(self, key_id: int, request_id: str, *, via_redis: bool) -> None:
        if not via_redis:
            self.local.release(key_id, request_id)
            return
        try:
            client, _, _ = self._async_redis()
            await client.zrem(self._cc_name(key_id), request_id)
        except (RedisError, OSError) as exc:
            log.warning("limits: could not release a concurrency lease (%s); it expires by itself", exc)

    async def refresh(self, key_id: int, request_id: str, *, via_redis: bool) -> bool:
        if not via_redis:
            return self.local.refresh(key_id, request_id, self.lease_seconds)
        try:
            refresh_script = self._async_redis()[2]
            args = (request_id, self.lease_seconds * 1000)
            return bool(await refresh_script(keys=[self._cc_name(key_id)], args=args))
        except (RedisError, OSError) as exc:
            log.warning("limits: could not refresh a concurrency lease (%s)", exc)
            return True

    # --- accrual (the usage recorder's drainer thread) ---------------------------------------

    def accrue_batch(self, logs: Iterable[StoredAttempt]) -> None:
        """Add a stored batch of attempts to the counters of their keys. Never raises.

        ``total_requests`` grows by the client requests (attempt 1 of each ``request_id``, D2);
        tokens and cost by every attempt.
        """
        per_key: dict[int, Accrual] = {}
        for row in logs:
            if row.api_key_id is None:
                continue
            accrual = per_key.setdefault(row.api_key_id, Accrual())
            accrual.requests += row.attempt == 1
            accrual.tokens += row.total_tokens
            accrual.cost += row.cost
        self.accrue(per_key)

    def accrue(self, per_key: Mapping[int, Accrual]) -> None:
        """Add usage to the database counters, the in-process counters and Redis. Never raises."""
        if not per_key:
            return
        try:
            add_to_usage_counters(per_key)
        except Exception:
            log.exception("limits: could not update ApiKeyUsageCounter for keys %s", sorted(per_key))
        now_s = int(time.time())
        for key_id, accrual in per_key.items():
            self.local.accrue(key_id, accrual.tokens, accrual.spend_micro, now_s)
        if not self.redis_url:
            return
        if time.monotonic() >= self._down_until:
            try:
                client, accrue_script = self._sync_redis()
                pipe = client.pipeline(transaction=False)
                for key_id, accrual in per_key.items():
                    if accrual.tokens or accrual.cost:
                        names = self._names(key_id)
                        keys = (names[2], names[5], names[6])
                        accrue_script(keys=keys, args=(accrual.tokens, accrual.spend_micro), client=pipe)
                pipe.execute()
                return
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        with self.local.lock:
            self._dirty.update(per_key)

    # --- keys changing -----------------------------------------------------------------------

    def forget(self, key_id: int) -> None:
        """Drop a key's quota counters (in process and in Redis) so they are seeded afresh."""
        self.local.forget(key_id)
        if not self.redis_url:
            return
        try:
            client, _ = self._sync_redis()
            client.delete(*self._counter_names(key_id))
        except (RedisError, OSError) as exc:
            log.error("limits: could not reset the quota counters of key %s in Redis: %s", key_id, exc)
            with self.local.lock:
                self._dirty.add(key_id)

    # --- Redis plumbing ----------------------------------------------------------------------

    def _names(self, key_id: int) -> list[str]:
        p, tag = self.prefix, f"{{{key_id}}}"
        return [
            f"{p}cc:{tag}",
            f"{p}rl:{tag}:rpm",
            f"{p}rl:{tag}:tpm",
            f"{p}q:{tag}:day:{local_day()}",
            f"{p}q:{tag}:total",
            f"{p}q:{tag}:tokens",
            f"{p}q:{tag}:spend_micro",
        ]

    def _cc_name(self, key_id: int) -> str:
        return f"{self.prefix}cc:{{{key_id}}}"

    def _counter_names(self, key_id: int) -> list[str]:
        return self._names(key_id)[3:]

    async def _reseed_dirty(self, client: Any) -> None:
        """Delete the Redis counters of keys counted in process meanwhile: the database has their usage."""
        with self.local.lock:
            dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        try:
            await client.delete(*(name for key_id in dirty for name in self._counter_names(key_id)))
        except BaseException:
            with self.local.lock:
                self._dirty.update(dirty)
            raise
        log.info("limits: Redis answers again; quota counters of keys %s will be seeded afresh", sorted(dirty))

    def _async_redis(self) -> tuple[Any, Any, Any]:
        """This event loop's client and scripts (a client's connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            # A bounded pool that makes a burst wait for a connection instead of failing over.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.redis_url,
                max_connections=REDIS_POOL_SIZE,
                timeout=_POOL_WAIT,
                socket_connect_timeout=_CONNECT_TIMEOUT,
                socket_timeout=_COMMAND_TIMEOUT,
            )
            client = aioredis.Redis(connection_pool=pool)
            entry = (client, client.register_script(ADMIT_LUA), client.register_script(REFRESH_LUA))
            self._clients[loop] = entry
        return entry

    def _sync_redis(self) -> tuple[redis.Redis, Any]:
        with self._sync_lock:
            if self._sync is None:
                client = redis.Redis.from_url(
                    self.redis_url, socket_connect_timeout=_CONNECT_TIMEOUT, socket_timeout=_COMMAND_TIMEOUT
                )
                self._sync = (client, client.register_script(ACCRUE_LUA))
            return self._sync

    def _redis_failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
        if self._redis_ok:
            self._redis_ok = False
            # Redis held the counts until now: read them from the database, not stale memory.
            self.local.forget()
            log.error(
                "limits: Redis is unreachable (%s: %s); enforcing limits in this process only, retrying in %ss",
                type(exc).__name__,
                exc,
                REDIS_RETRY_SECONDS,
            )

    async def aclose(self) -> None:
        """Close this event loop's Redis client (tests, the bench, shutdown)."""
        entry = self._clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].aclose(close_connection_pool=True)


# --- the process's limiter ----------------------------------------------------------------------

_default: Limiter | None = None


def default_limiter() -> Limiter:
    """The limiter of this process, built from settings on first use."""
    global _default
    if _default is None:
        _default = Limiter(settings.REDIS_URL)
    return _default


async def admit(key: KeySnapshot, request_id: str | UUID) -> Admission:
    """Admit one client request of ``key`` or raise a 429 ``RelayError`` (see the module docstring)."""
    if not key.limited:
        return NO_LIMITS
    return await default_limiter().admit(key, request_id)


def accrue_batch(logs: Iterable[StoredAttempt]) -> None:
    """Add a batch of stored attempts to their keys' counters (the usage recorder calls this). Never raises."""
    try:
        default_limiter().accrue_batch(logs)
    except Exception:  # the rows are stored: a retry of the batch would write them twice
        log.exception("limits: accruing a batch of usage failed")


def accrue(key_id: int, tokens: int, cost_micro: int, requests: int = 0) -> None:
    """Add one key's usage to its counters: TPM window, tokens, spend (and requests in the database)."""
    cost = Decimal(cost_micro) / 1_000_000
    default_limiter().accrue({key_id: Accrual(requests=requests, tokens=tokens, cost=cost)})


def forget_counters(sender: Any, instance: Any, update_fields: Iterable[str] | None = None, **kwargs: Any) -> None:
    """Signal receiver: a key's limits may have changed, so reseed its quota counters."""
    if update_fields is None or _LIMIT_FIELDS.intersection(update_fields):
        default_limiter().forget(instance.pk)


# --- the database side ------------------------------------------------------------------------


@closes_old_connections  # no request_finished closes them on the fast path
def load_usage(key_id: int, since: dt.datetime) -> Usage:
    """A key's counters as the database knows them; ``today`` counts client requests since ``since``."""
    from accounts.models import ApiKeyUsageCounter
    from usage.models import RequestLog

    row = (
        ApiKeyUsageCounter.objects.filter(api_key_id=key_id)
        .values_list("total_requests", "total_tokens", "total_cost")
        .first()
    )
    requests, tokens, cost = row or (0, 0, Decimal(0))
    today = RequestLog.objects.filter(api_key_id=key_id, time__gte=since).values("request_id").distinct().count()
    return Usage(requests=requests, tokens=tokens, spend_micro=to_micro(cost), today=today)


def add_to_usage_counters(per_key: Mapping[int, Accrual]) -> None:
    """``F()`` updates of ``ApiKeyUsageCounter``, creating the rows of keys counted the first time."""
    from accounts.models import ApiKey, ApiKeyUsageCounter

    def add(key_id: int, accrual: Accrual) -> bool:
        return bool(
            ApiKeyUsageCounter.objects.filter(api_key_id=key_id).update(
                total_requests=F("total_requests") + accrual.requests,
                total_tokens=F("total_tokens") + accrual.tokens,
                total_cost=F("total_cost") + accrual.cost,
                updated_at=timezone.now(),
            )
        )

    with transaction.atomic():
        missing = [key_id for key_id, accrual in per_key.items() if not add(key_id, accrual)]
        if missing:
            existing = list(ApiKey.objects.filter(pk__in=missing).values_list("pk", flat=True))
            rows = [ApiKeyUsageCounter(api_key_id=key_id) for key_id in existing]
            ApiKeyUsageCounter.objects.bulk_create(rows, ignore_conflicts=True)
            for key_id in existing:
                add(key_id, per_key[key_id])


# --- rejections and local time ----------------------------------------------------------------


def rejection(key: KeySnapshot, limit: int, retry_after: int, current: int) -> RelayError:
    """The 429 of D7 for ``limit``, with the reference message (§1.4) and Retry-After."""
    if limit == CONCURRENCY:
        message = f"concurrency limit ({key.concurrency_limit} requests in flight) exceeded for this API key"
        code, retry_after = "concurrency_limit_exceeded", 1
    elif limit == RPM:
        message, code = f"RPM limit ({key.rpm_limit} requests/min) exceeded for this API key", "rpm_limit_exceeded"
    elif limit == TPM:
        message, code = f"TPM limit ({key.tpm_limit} tokens/min) exceeded for this API key", "tpm_limit_exceeded"
    elif limit == DAILY:
        message = f"daily request limit ({key.daily_request_limit}) exceeded for this API key"
        code, retry_after = "daily_limit_exceeded", seconds_to_local_midnight()
    elif limit == TOTAL:
        message = f"total request quota ({key.total_request_limit}) exhausted for this API key"
        code, retry_after = "total_quota_exceeded", NEVER_RESETS
    elif limit == TOKENS:
        message = f"token quota ({key.token_quota}) exhausted for this API key"
        code, retry_after = "token_quota_exceeded", NEVER_RESETS
    elif limit == SPENDING:
        spent, cap = Decimal(current) / 1_000_000, Decimal(key.spending_limit_micro) / 1_000_000
        message = f"spending limit (${cap:.2f}) exceeded for this API key (current: ${spent:.2f})"
        code, retry_after = "spending_limit_exceeded", NEVER_RESETS
    else:
        raise ValueError(f"unknown limit {limit}")
    return RelayError(429, message, code=code, retry_after=max(1, int(retry_after)))


def to_micro(usd: Decimal) -> int:
    return int((usd * 1_000_000).to_integral_value(ROUND_HALF_UP))


_day_cache: tuple[int, str, str] = (0, "", "")


def local_day() -> str:
    """Today's date in ``TIME_ZONE`` (not a user's activated zone) as ``YYYYMMDD``, worked out once a second."""
    global _day_cache
    second, zone = int(time.time()), settings.TIME_ZONE
    if _day_cache[0] != second or _day_cache[1] != zone:
        _day_cache = (second, zone, timezone.localdate(timezone=timezone.get_default_timezone()).strftime("%Y%m%d"))
    return _day_cache[2]


def local_midnight() -> dt.datetime:
    """The start of today in ``TIME_ZONE``, as an aware datetime."""
    zone = timezone.get_default_timezone()
    return dt.datetime.combine(timezone.localdate(timezone=zone), dt.time(), tzinfo=zone)


def seconds_to_local_midnight(now: dt.datetime | None = None) -> int:
    """Whole seconds until the next local midnight (timestamps, so a DST change counts right)."""
    local = timezone.localtime(now, timezone=timezone.get_default_timezone())
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), tzinfo=local.tzinfo)
    return max(1, math.ceil(midnight.timestamp() - local.timestamp()))
