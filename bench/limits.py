"""Latency that the limit checks add to a request: ``admit()`` per backend, p50 and p99 in µs.

Rows: a key without limits (no lock, no Redis); every limit in process (``REDIS_URL`` unset);
a bare Redis PING on the same client (the floor of any round trip); RPM only and every limit in
Redis (one Lua script, one round trip each). Each admission is
released right away (a second round trip in Redis, timed apart) so the concurrency slot stays
free; the limits are set high enough that nothing is rejected. The Redis rows use
``REDIS_URL`` or a local Redis at 127.0.0.1:6379 under a throwaway key prefix, and are left out
when none answers. One process, one event loop, sequential calls. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402

from accounts import limits  # noqa: E402
from accounts.access import KeySnapshot  # noqa: E402
from accounts.limits import Limiter, Usage  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "limits.json"
HIGH = 10**9
EVERY_LIMIT = {
    "daily_request_limit": HIGH,
    "total_request_limit": HIGH,
    "token_quota": HIGH,
    "spending_limit_micro": HIGH,
    "rpm_limit": HIGH,
    "tpm_limit": HIGH,
    "concurrency_limit": HIGH,
}


def _key(key_id: int, **limit_values: int) -> KeySnapshot:
    return KeySnapshot(
        key_id, 1, "bench", "sk-be…nch", "h", True, None, (), frozenset(), frozenset(), "", **limit_values
    )


def _no_database(key_id: int, since: dt.datetime) -> Usage:
    return Usage()  # counters start at zero: the bench measures checks, not seeding


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _time(limiter: Limiter | None, key: KeySnapshot, n: int, warmup: int) -> dict[str, Any]:
    admit_us: list[float] = []
    release_us: list[float] = []
    for i in range(warmup + n):
        rid = uuid.uuid4().hex
        start = time.perf_counter_ns()
        admission = await (limits.admit(key, rid) if limiter is None else limiter.admit(key, rid))
        middle = time.perf_counter_ns()
        await admission.release()
        end = time.perf_counter_ns()
        if i >= warmup:
            admit_us.append((middle - start) / 1000)
            release_us.append((end - middle) / 1000)
    return {
        "n": n,
        "p50_us": statistics.median(admit_us),
        "p99_us": _percentile(admit_us, 0.99),
        "mean_us": statistics.fmean(admit_us),
        "release_p50_us": statistics.median(release_us),
    }


async def _ping(limiter: Limiter, n: int, warmup: int) -> dict[str, Any]:
    """One bare round trip on the same client: what any Redis check costs at least."""
    client = limiter._async_redis()[0]
    samples: list[float] = []
    for i in range(warmup + n):
        start = time.perf_counter_ns()
        await client.ping()
        if i >= warmup:
            samples.append((time.perf_counter_ns() - start) / 1000)
    return {
        "n": n,
        "p50_us": statistics.median(samples),
        "p99_us": _percentile(samples, 0.99),
        "mean_us": statistics.fmean(samples),
        "release_p50_us": 0.0,
    }


def _redis_url() -> str | None:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except (redis.RedisError, OSError) as exc:
        print(f"Redis rows left out: nothing answers at {url} ({exc})")
        return None
    return url


def _fill_tpm_window(url: str, limiter: Limiter, key_id: int) -> None:
    """A busy key: tokens reported in each of the last 60 seconds, which the TPM check sums."""
    client = redis.Redis.from_url(url)
    now = int(client.time()[0])
    client.hset(limiter._names(key_id)[2], mapping={str(now - s): 100 for s in range(60)})
    client.close()


async def run(n: int, warmup: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    limits._default = Limiter("")
    rows.append({"case": "no limits", "round_trips": 0, **await _time(None, _key(1), n, warmup)})
    local = Limiter("", usage_loader=_no_database)
    rows.append(
        {"case": "in process, every limit", "round_trips": 0, **await _time(local, _key(2, **EVERY_LIMIT), n, warmup)}
    )
    url = _redis_url()
    if url is None:
        return rows
    prefix = f"bench-limits-{uuid.uuid4().hex}:"
    shared = Limiter(url, prefix=prefix, usage_loader=_no_database)
    try:
        rows.append({"case": "Redis PING (baseline)", "round_trips": 1, **await _ping(shared, n, warmup)})
        await shared.admit(_key(3, **EVERY_LIMIT), "seed")  # seeds the counters once
        _fill_tpm_window(url, shared, 3)
        rows.append(
            {"case": "Redis, RPM only", "round_trips": 1, **await _time(shared, _key(4, rpm_limit=HIGH), n, warmup)}
        )
        rows.append(
            {"case": "Redis, every limit", "round_trips": 1, **await _time(shared, _key(3, **EVERY_LIMIT), n, warmup)}
        )
    finally:
        await shared.aclose()
        client = redis.Redis.from_url(url)
        names = list(client.scan_iter(match=f"{prefix}*"))
        if names:
            client.delete(*names)
    return rows


def _machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "commit": commit.stdout.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="timed admissions per row")
    parser.add_argument("--warmup", type=int, default=500)
    options = parser.parse_args()
    rows = asyncio.run(run(options.n, options.warmup))
    print(f"\n{'admit()':<26}{'round trips':>12}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}{'release p50 µs':>16}")
    for row in rows:
        print(
            f"{row['case']:<26}{row['round_trips']:>12}{row['p50_us']:>10.1f}{row['p99_us']:>10.1f}"
            f"{row['mean_us']:>10.1f}{row['release_p50_us']:>16.1f}"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": _machine(), "rows": rows}, indent=2) + "\n")
    print(f"\nload average {os.getloadavg()[0]:.2f}; written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
