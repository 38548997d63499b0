"""What choosing routes costs a request: ``scheduler.candidates`` and the cool-down mirror, with and without Redis.

Builds an in-memory routing table (no database) of N channels serving one model and times, per call:
``candidates()`` with nothing cooling and with half the channels cooling, ``cooling()`` alone, the
per-request ``arefresh()`` (a no-op inside the 1 s interval), a forced refresh against Redis with M
pairs cooling (one ZRANGEBYSCORE) and ``amark_failure`` (one Lua script). Prints a table and writes
``bench/results/scheduler.json``. See bench/README.md.

    .venv/bin/python bench/scheduler.py [--channels 50] [--cooling 200] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

import django  # noqa: E402

django.setup()

from accounts.access import KeySnapshot  # noqa: E402
from channels_app import cooldowns, scheduler  # noqa: E402
from channels_app.executors.base import UpstreamError  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scheduler.json"


def _table(channels: int) -> scheduler.RoutingTable:
    table = scheduler.RoutingTable(built_at=time.monotonic(), strategy="round-robin")
    entries = []
    for i in range(1, channels + 1):
        snap = scheduler.ChannelSnapshot(
            id=i,
            team_id=1,
            name=f"c{i}",
            kind="openai-compatibility",
            base_url="http://127.0.0.1:9",
            headers={},
            priority=i % 3,
            group_ids=frozenset(),
            credentials=(("sk", "", str(i)),),
        )
        entries.append(scheduler.Entry(snap, "gpt-up", "gpt"))
    table.models[1] = {"gpt": entries}
    return table


KEY = KeySnapshot(1, 1, "k", "sk-…", "h", True, None, (), frozenset(), frozenset(), "")


def _per_call_us(fn: Callable[[], object], number: int) -> float:
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(rounds)


async def _async_per_call_us(fn: Callable[[], object], number: int) -> float:
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(number):
            await fn()  # type: ignore[misc]
        rounds.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(rounds)


class _Route:
    def __init__(self, channel_id: int, model: str) -> None:
        self.channel = scheduler.ChannelSnapshot(channel_id, 1, "", "", "", {}, 0, frozenset(), ())
        self.upstream_model = model
        self.credential = str(channel_id)


def run(channels: int, cooling: int, redis_url: str) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    table = _table(channels)
    cooldowns.use(cooldowns.CooldownStore())
    rows.append(
        (
            f"candidates(), {channels} channels, none cooling",
            _per_call_us(lambda: scheduler.candidates(table, KEY, "gpt"), 2000),
        )
    )
    for i in range(1, channels + 1, 2):
        cooldowns.mark_failure(_Route(i, "gpt-up"), UpstreamError(503, "x", upstream_status=503))
    rows.append(
        (
            f"candidates(), {channels} channels, half cooling",
            _per_call_us(lambda: scheduler.candidates(table, KEY, "gpt"), 2000),
        )
    )
    rows.append(("cooling() one lookup", _per_call_us(lambda: cooldowns.cooling(1, "gpt-up"), 100_000)))
    if not redis_url:
        return rows

    async def with_redis() -> None:
        namespace = f"bench-{uuid.uuid4().hex[:8]}"
        store = cooldowns.CooldownStore(redis_url, namespace=namespace)
        for i in range(cooling):
            await store.amark_failure(_Route(10_000 + i, "gpt-up"), UpstreamError(429, "x", upstream_status=429))
        await store.arefresh(force=True)
        rows.append(("arefresh() inside the interval (per request)", await _async_per_call_us(store.arefresh, 20_000)))
        rows.append(
            (
                f"arefresh(force) = 1 ZRANGEBYSCORE, {cooling} pairs",
                await _async_per_call_us(lambda: store.arefresh(force=True), 200),
            )
        )
        route = _Route(1, "gpt-up")
        err = UpstreamError(503, "x", upstream_status=503)
        rows.append(
            ("amark_failure() = 1 Lua script", await _async_per_call_us(lambda: store.amark_failure(route, err), 500))
        )
        rows.append(
            (
                "amark_success() with nothing to clear",
                await _async_per_call_us(lambda: store.amark_success(_Route(2, "m")), 20_000),
            )
        )
        store.clear()
        store.close()
        await store.aclose()

    asyncio.run(with_redis())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--cooling", type=int, default=200, help="pairs cooling in Redis during the refresh timing")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), help="'' to skip")
    args = parser.parse_args()
    rows = run(args.channels, args.cooling, args.redis)
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  µs/call")
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:8.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "python": sys.version.split()[0],
                "channels": args.channels,
                "cooling": args.cooling,
                "redis": bool(args.redis),
                "rows": {name: round(micros, 3) for name, micros in rows},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
