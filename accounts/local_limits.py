"""The in-process side of ``accounts.limits``: every limit kept in this process's memory.

Used when ``REDIS_URL`` is unset, and as the fallback while Redis is unreachable. The checks and
their order are those of the Redis script; RPM, TPM and concurrency windows live in dicts, the
quota counters are read from the database once per key (by the caller) and then kept here.
Correct for a single process only: two processes each keep their own windows and counters.

One ``threading.Lock`` guards it all. It is never held across an ``await`` and each critical
section is a few dict operations, so coroutines (which never block on it for long) and the usage
recorder's drainer thread (which adds tokens and cost) can share it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from accounts.access import KeySnapshot

WINDOW = 60  # seconds, for RPM and TPM

# Which limit rejected a request; also the order in which they are checked.
CONCURRENCY, RPM, TPM, DAILY, TOTAL, TOKENS, SPENDING = range(1, 8)


@dataclass(slots=True)
class Usage:
    """A key's quota counters: lifetime requests, tokens and cost, and client requests today."""

    requests: int = 0
    tokens: int = 0
    spend_micro: int = 0
    today: int = 0


@dataclass(slots=True)
class _Quota:
    day: str
    usage: Usage


def needs_quota(key: KeySnapshot) -> bool:
    """Whether checking ``key`` needs its counters (daily, total, token or spending limit)."""
    return bool(key.daily_request_limit or key.total_request_limit or key.token_quota or key.spending_limit_micro)


def tpm_wait(buckets: dict[int, int], now_s: int, limit: int) -> int | None:
    """Seconds until the tokens of the last minute drop below ``limit``; None when they already are.

    ``buckets`` maps an epoch second to the tokens reported in it; seconds that left the window
    are deleted on the way.
    """
    for second in [s for s in buckets if s <= now_s - WINDOW]:
        del buckets[second]
    left = sum(buckets.values())
    if left < limit:
        return None
    for second in sorted(buckets):
        left -= buckets[second]
        if left < limit:
            return second + WINDOW - now_s
    return WINDOW


class LocalLimits:
    """Sliding windows, leases and quota counters of the keys this process has seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rpm: dict[int, deque[float]] = {}  # monotonic admission times
        self.tpm: dict[int, dict[int, int]] = {}  # epoch second -> tokens
        self.leases: dict[int, dict[str, float]] = {}  # request_id -> monotonic expiry
        self.quotas: dict[int, _Quota] = {}

    def has_quota(self, key_id: int) -> bool:
        return key_id in self.quotas

    def install(self, key_id: int, day: str, usage: Usage) -> None:
        """Keep counters read from the database, unless a concurrent load got here first."""
        with self.lock:
            self.quotas.setdefault(key_id, _Quota(day, usage))

    def admit(self, key: KeySnapshot, request_id: str, day: str, lease_seconds: float) -> tuple[int, int, int] | None:
        """Check every limit and, only if all pass, record the admission.

        Returns None when admitted, else ``(limit, retry_after, current)``.
        """
        now, now_s = time.monotonic(), int(time.time())
        with self.lock:
            leases = self.leases.setdefault(key.id, {}) if key.concurrency_limit else None
            if leases is not None:
                for expired in [r for r, until in leases.items() if until <= now]:
                    del leases[expired]
                if len(leases) >= key.concurrency_limit:
                    return CONCURRENCY, 1, len(leases)
            window = self.rpm.setdefault(key.id, deque()) if key.rpm_limit else None
            if window is not None:
                while window and window[0] <= now - WINDOW:
                    window.popleft()
                if len(window) >= key.rpm_limit:
                    leaving = window[len(window) - key.rpm_limit]
                    return RPM, math.ceil(leaving + WINDOW - now), len(window)
            if key.tpm_limit:
                buckets = self.tpm.get(key.id)
                wait = tpm_wait(buckets, now_s, key.tpm_limit) if buckets else None
                if wait is not None and buckets is not None:
                    return TPM, wait, sum(buckets.values())
            quota = self.quotas.get(key.id)
            if quota is not None:
                if quota.day != day:  # a new local day
                    quota.day, quota.usage.today = day, 0
                rejected = _over_quota(key, quota.usage)
                if rejected is not None:
                    return rejected
                quota.usage.today += 1
                quota.usage.requests += 1
            if leases is not None:
                leases[request_id] = now + lease_seconds
            if window is not None:
                window.append(now)
        return None

    def release(self, key_id: int, request_id: str) -> None:
        with self.lock:
            self.leases.get(key_id, {}).pop(request_id, None)

    def refresh(self, key_id: int, request_id: str, lease_seconds: float) -> bool:
        with self.lock:
            leases = self.leases.get(key_id, {})
            if request_id not in leases:
                return False
            leases[request_id] = time.monotonic() + lease_seconds
            return True

    def accrue(self, key_id: int, tokens: int, spend_micro: int, now_s: int) -> None:
        """Add an attempt's tokens to the TPM window and tokens and cost to the counters."""
        with self.lock:
            if tokens:
                buckets = self.tpm.setdefault(key_id, {})
                buckets[now_s] = buckets.get(now_s, 0) + tokens
                if len(buckets) > 2 * WINDOW:  # keys without a TPM limit are never trimmed by admit()
                    tpm_wait(buckets, now_s, 1)
            quota = self.quotas.get(key_id)
            if quota is not None:
                quota.usage.tokens += tokens
                quota.usage.spend_micro += spend_micro

    def forget(self, key_id: int | None = None) -> None:
        """Drop the quota counters of one key (or all), so they are read from the database again."""
        with self.lock:
            if key_id is None:
                self.quotas.clear()
            else:
                self.quotas.pop(key_id, None)


def _over_quota(key: KeySnapshot, usage: Usage) -> tuple[int, int, int] | None:
    if key.daily_request_limit and usage.today >= key.daily_request_limit:
        return DAILY, 0, usage.today
    if key.total_request_limit and usage.requests >= key.total_request_limit:
        return TOTAL, 0, usage.requests
    if key.token_quota and usage.tokens >= key.token_quota:
        return TOKENS, 0, usage.tokens
    if key.spending_limit_micro and usage.spend_micro >= key.spending_limit_micro:
        return SPENDING, 0, usage.spend_micro
    return None
