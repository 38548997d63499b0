"""A limiter of one test's own, installed as the process's limiter while the test runs.

It uses the backend the settings choose (Redis when ``REDIS_URL`` is set, else in process) under a
key prefix no other test or test run shares, so RPM windows and quota counters left in a shared Redis
by earlier runs (key ids restart with every fresh test database) never meet this test's. Afterwards
its Redis clients are closed on the gateway threads' loops that opened them and its keys deleted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from django.conf import settings

from accounts import limits
from accounts.limits import Limiter


@contextmanager
def isolated_limiter(monkeypatch: pytest.MonkeyPatch, name: str) -> Iterator[Limiter]:
    prefix = f"test-{name}-{uuid.uuid4().hex}:"
    made = Limiter(settings.REDIS_URL, prefix=prefix)
    monkeypatch.setattr(limits, "_default", made)
    try:
        yield made
    finally:
        for loop, (client, *_) in list(made._clients.items()):  # one client per gateway thread's loop
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(client.aclose(close_connection_pool=True), loop).result(timeout=5)
        if settings.REDIS_URL:
            client = redis.Redis.from_url(settings.REDIS_URL)
            names = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if names:
                client.delete(*names)
            client.close()
