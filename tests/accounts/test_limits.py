"""Quotas and rate limits (accounts/limits.py): every limit, both backends, shared across processes.

Tests taking the ``limiter`` fixture run twice: in process, and against Redis. Redis is the one in
``REDIS_URL`` (CI sets it; it must answer) or else a local one at 127.0.0.1:6379 if it answers; when
none does, the Redis variants skip and say why. Each Redis test uses a key prefix of its own and
deletes its keys afterwards, so concurrent runs against one Redis do not meet.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from asgiref.sync import sync_to_async
from django.utils import timezone
from redis.exceptions import RedisError

from accounts import access, limits
from accounts.access import KeySnapshot
from accounts.checks import limits_are_shared
from accounts.limits import NO_LIMITS, Accrual, Limiter
from accounts.models import ApiKeyUsageCounter
from channels_app.models import ModelPrice
from gateway.errors import RelayError
from usage.models import RequestLog
from usage.recorder import Recorder, UsageEvent

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]
db = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis that answers: REDIS_URL's (which must), else the local one, else skip with the reason."""
    configured = os.environ.get("REDIS_URL", "")
    url = configured or LOCAL_REDIS
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        client.ping()
        client.close()
    except (RedisError, OSError) as exc:
        if configured:
            pytest.fail(f"REDIS_URL={configured} does not answer: {exc}")
        pytest.skip(f"no Redis answers at {url} ({exc}); set REDIS_URL to run the shared-limit tests")
    return url


def _drop_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    names = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if names:
        client.delete(*names)
    client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test-limits-{uuid.uuid4().hex}:"
    yield prefix
    _drop_keys(redis_url, prefix)


@pytest.fixture(params=["in-process", "redis"])
async def limiter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Limiter]:
    """A limiter of each kind, installed as the process's limiter (the recorder and signals use it)."""
    if request.param == "in-process":
        made = Limiter("")
    else:
        made = Limiter(request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix"))
    monkeypatch.setattr(limits, "_default", made)
    yield made
    await made.aclose()


@pytest.fixture
async def redis_limiter(redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Limiter]:
    made = Limiter(redis_url, prefix=redis_prefix)
    monkeypatch.setattr(limits, "_default", made)
    yield made
    await made.aclose()


def _key(key_id: int = 1, **limit_values: int) -> KeySnapshot:
    """A snapshot for limits that need no database (RPM, TPM, concurrency)."""
    return KeySnapshot(
        id=key_id,
        team_id=1,
        name="k",
        display="sk-ab…xyz",
        key_hash="h",
        enabled=True,
        expires_at=None,
        allowed_models=(),
        allowed_group_ids=frozenset(),
        allowed_channel_ids=frozenset(),
        system_prompt="",
        **limit_values,
    )


async def _snapshot(persona, **fields: object) -> KeySnapshot:
    """Give the persona's key these limits in the database and return its snapshot."""

    def save() -> KeySnapshot | None:
        for name, value in fields.items():
            setattr(persona.key, name, value)
        persona.key.save()
        return access._load(persona.key.key_hash)

    snapshot = await sync_to_async(save)()
    assert snapshot is not None
    return snapshot


async def _rejected(limiter: Limiter, key: KeySnapshot) -> RelayError:
    with pytest.raises(RelayError) as caught:
        await limiter.admit(key, uuid.uuid4())
    assert caught.value.status == 429 and caught.value.error_type == "rate_limit_exceeded"
    return caught.value


async def _admit_all(limiter: Limiter, key: KeySnapshot, n: int) -> list[limits.Admission]:
    return [await limiter.admit(key, uuid.uuid4()) for _ in range(n)]


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


# --- each limit --------------------------------------------------------------------------------


async def test_rpm_admits_up_to_the_limit_then_rejects_until_the_oldest_request_leaves_the_window(limiter) -> None:
    key = _key(rpm_limit=3)
    await _admit_all(limiter, key, 3)
    error = await _rejected(limiter, key)
    assert error.code == "rpm_limit_exceeded"
    assert error.message == "RPM limit (3 requests/min) exceeded for this API key"
    assert error.retry_after is not None and 58 <= error.retry_after <= 60


@db
async def test_tpm_rejects_once_the_tokens_of_the_last_minute_reach_the_limit(limiter, alice) -> None:
    key = await _snapshot(alice, tpm_limit=100)
    await limiter.admit(key, uuid.uuid4())
    await sync_to_async(limiter.accrue)({key.id: Accrual(tokens=60)})
    await limiter.admit(key, uuid.uuid4())  # 60 < 100: the crossing request still goes through
    await sync_to_async(limiter.accrue)({key.id: Accrual(tokens=40)})
    error = await _rejected(limiter, key)
    assert error.code == "tpm_limit_exceeded"
    assert error.message == "TPM limit (100 tokens/min) exceeded for this API key"
    assert error.retry_after is not None and 1 <= error.retry_after <= 60


async def test_concurrency_rejects_beyond_its_slots_and_a_release_frees_exactly_one(limiter) -> None:
    key = _key(concurrency_limit=2)
    first, _second = await _admit_all(limiter, key, 2)
    error = await _rejected(limiter, key)
    assert (error.code, error.retry_after) == ("concurrency_limit_exceeded", 1)
    assert error.message == "concurrency limit (2 requests in flight) exceeded for this API key"

    await first.release()
    await first.release()  # idempotent: must not free the second request's slot
    await limiter.admit(key, uuid.uuid4())
    assert (await _rejected(limiter, key)).code == "concurrency_limit_exceeded"


async def test_an_expired_concurrency_lease_frees_its_slot(limiter) -> None:
    limiter.lease_seconds = 1
    key = _key(concurrency_limit=1)
    held = await limiter.admit(key, uuid.uuid4())
    assert await held.refresh()
    await _rejected(limiter, key)
    await asyncio.sleep(1.1)
    await limiter.admit(key, uuid.uuid4())
    assert not await held.refresh()  # the lease is gone: a late refresh does not take it back


@db
async def test_the_daily_limit_rejects_until_the_next_local_midnight(limiter, alice) -> None:
    key = await _snapshot(alice, daily_request_limit=2)
    await _admit_all(limiter, key, 2)
    error = await _rejected(limiter, key)
    assert error.code == "daily_limit_exceeded"
    assert error.message == "daily request limit (2) exceeded for this API key"
    assert error.retry_after is not None and abs(error.retry_after - limits.seconds_to_local_midnight()) <= 2


@db
async def test_the_total_quota_rejects_for_good_and_leaves_other_teams_keys_alone(limiter, alice, charlie) -> None:
    key = await _snapshot(alice, total_request_limit=2)
    others = await _snapshot(charlie, total_request_limit=2)
    await _admit_all(limiter, key, 2)
    error = await _rejected(limiter, key)
    assert (error.code, error.retry_after) == ("total_quota_exceeded", 86400)
    assert error.message == "total request quota (2) exhausted for this API key"
    await _admit_all(limiter, others, 2)  # charlie's key has counters of its own


@db
async def test_the_token_quota_rejects_once_accrued_tokens_reach_it(limiter, alice) -> None:
    key = await _snapshot(alice, token_quota=1000)
    await limiter.admit(key, uuid.uuid4())
    await sync_to_async(limiter.accrue)({key.id: Accrual(requests=1, tokens=1000)})
    error = await _rejected(limiter, key)
    assert (error.code, error.retry_after) == ("token_quota_exceeded", 86400)
    assert error.message == "token quota (1000) exhausted for this API key"


@db
async def test_the_spending_limit_rejects_once_accrued_cost_reaches_it_and_names_both_amounts(limiter, alice) -> None:
    key = await _snapshot(alice, spending_limit_usd=Decimal("0.50"))
    assert key.spending_limit_micro == 500_000
    await limiter.admit(key, uuid.uuid4())
    await sync_to_async(limiter.accrue)({key.id: Accrual(requests=1, tokens=10, cost=Decimal("0.5125"))})
    error = await _rejected(limiter, key)
    assert (error.code, error.retry_after) == ("spending_limit_exceeded", 86400)
    assert error.message == "spending limit ($0.50) exceeded for this API key (current: $0.51)"


async def test_limits_are_checked_concurrency_first_then_rpm(limiter) -> None:
    key = _key(concurrency_limit=1, rpm_limit=1)
    held = await limiter.admit(key, uuid.uuid4())
    assert (await _rejected(limiter, key)).code == "concurrency_limit_exceeded"
    await held.release()
    assert (await _rejected(limiter, key)).code == "rpm_limit_exceeded"


async def test_a_rejected_request_consumes_nothing(limiter) -> None:
    key = _key(concurrency_limit=1, rpm_limit=2)
    held = await limiter.admit(key, uuid.uuid4())
    for _ in range(5):
        assert (await _rejected(limiter, key)).code == "concurrency_limit_exceeded"
    await held.release()
    await limiter.admit(key, uuid.uuid4())  # the second RPM slot was not taken by the rejections


# --- keys without limits, the snapshot, the system check ----------------------------------------


async def test_a_key_without_limits_is_admitted_without_any_redis_call(monkeypatch) -> None:
    made = Limiter("redis://127.0.0.1:6379/0")

    def no_redis() -> None:
        raise AssertionError("a key without limits must not reach Redis")

    monkeypatch.setattr(made, "_async_redis", no_redis)
    monkeypatch.setattr(limits, "_default", made)
    admission = await limits.admit(_key(), uuid.uuid4())
    assert admission is NO_LIMITS and await made.admit(_key(), "r") is NO_LIMITS
    await admission.release()


@pytest.mark.django_db
def test_the_snapshot_carries_the_keys_limits_with_spending_in_micro_usd(alice) -> None:
    assert access._load(alice.key.key_hash).limited is False  # type: ignore[union-attr]
    alice.key.spending_limit_usd = Decimal("12.345678")
    alice.key.rpm_limit = 7
    alice.key.save()
    snapshot = access._load(alice.key.key_hash)
    assert snapshot is not None and snapshot.limited
    assert (snapshot.spending_limit_micro, snapshot.rpm_limit, snapshot.tpm_limit) == (12_345_678, 7, 0)


def test_the_system_check_warns_when_limits_live_in_one_process_outside_debug(settings) -> None:
    settings.REDIS_URL, settings.DEBUG = "", False
    assert [w.id for w in limits_are_shared(None)] == ["accounts.W001"]
    settings.DEBUG = True
    assert limits_are_shared(None) == []
    settings.REDIS_URL, settings.DEBUG = LOCAL_REDIS, False
    assert limits_are_shared(None) == []


# --- counters: seeding, local dates, accrual from the recorder ----------------------------------


@db
async def test_missing_counters_are_seeded_from_the_database(limiter, alice) -> None:
    await sync_to_async(ApiKeyUsageCounter.objects.create)(
        api_key=alice.key, total_requests=5, total_tokens=700, total_cost=Decimal("1.5")
    )
    key = await _snapshot(alice, total_request_limit=6, token_quota=10_000, spending_limit_usd=Decimal(100))
    await limiter.admit(key, uuid.uuid4())
    assert (await _rejected(limiter, key)).code == "total_quota_exceeded"
    if limiter.redis_url:
        names = limiter._names(key.id)
        assert _redis(limiter.redis_url).mget(names[4:]) == ["6", "700", "1500000"]


@db
async def test_the_daily_counter_follows_the_local_date_not_utc(limiter, alice, settings) -> None:
    # A zone whose date differs from UTC's right now, whatever the hour.
    settings.TIME_ZONE = "Pacific/Kiritimati" if timezone.now().hour >= 10 else "Pacific/Pago_Pago"
    midnight = limits.local_midnight()
    assert midnight.date() != timezone.now().date() and midnight.utcoffset() != dt.timedelta(0)

    def log_at(when: dt.datetime) -> None:
        RequestLog.objects.create(
            time=when, api_key=alice.key, team=alice.team, client_dialect="openai-chat", status_code=200
        )

    await sync_to_async(log_at)(midnight - dt.timedelta(seconds=1))  # yesterday, locally
    await sync_to_async(log_at)(midnight)  # today
    key = await _snapshot(alice, daily_request_limit=2)
    await limiter.admit(key, uuid.uuid4())
    error = await _rejected(limiter, key)
    assert error.code == "daily_limit_exceeded"
    assert error.retry_after is not None and abs(error.retry_after - limits.seconds_to_local_midnight()) <= 2
    if limiter.redis_url:
        day = f"{limiter.prefix}q:{{{key.id}}}:day:{midnight:%Y%m%d}"
        client = _redis(limiter.redis_url)
        assert client.get(day) == "2" and 0 < client.ttl(day) <= 48 * 3600


def _event(persona, request_id: uuid.UUID, attempt: int, tokens: int, status: int = 200) -> UsageEvent:
    return UsageEvent(
        time=timezone.now(),
        request_id=request_id,
        attempt=attempt,
        client_dialect="openai-chat",
        path="/v1/chat/completions",
        requested_model="gpt-test",
        stream=False,
        status_code=status,
        team_id=persona.team.pk,
        api_key_id=persona.key.pk,
        input_tokens=tokens - 100,
        output_tokens=100,
        total_tokens=tokens,
    )


@db
async def test_the_recorder_drainer_accrues_tpm_tokens_spend_and_the_usage_counter(limiter, alice) -> None:
    await sync_to_async(ModelPrice.objects.create)(model="gpt-test", input_per_million=1, output_per_million=2)
    key = await _snapshot(alice, tpm_limit=1800, token_quota=10**9, spending_limit_usd=Decimal(1000))
    await limiter.admit(key, uuid.uuid4())  # seeds the counters at zero

    recorder = Recorder(autostart=False)
    retried, single = uuid.uuid4(), uuid.uuid4()
    recorder.record(_event(alice, retried, attempt=1, tokens=1000, status=429))
    recorder.record(_event(alice, retried, attempt=2, tokens=500))
    recorder.record(_event(alice, single, attempt=1, tokens=300))
    assert await sync_to_async(recorder.flush)()

    counter = await sync_to_async(ApiKeyUsageCounter.objects.get)(api_key=alice.key)
    logged_cost = sum([row.cost async for row in RequestLog.objects.filter(api_key=alice.key)], Decimal(0))
    assert (counter.total_requests, counter.total_tokens) == (2, 1800)  # one unit per client request (D2)
    assert counter.total_cost == logged_cost > 0
    assert (await _rejected(limiter, key)).code == "tpm_limit_exceeded"
    if limiter.redis_url:
        names = limiter._names(key.id)
        client = _redis(limiter.redis_url)
        assert sum(int(v) for v in client.hvals(names[2])) == 1800
        assert client.mget(names[5:]) == ["1800", str(limits.to_micro(logged_cost))]
    else:
        usage = limiter.local.quotas[key.id].usage
        assert (usage.tokens, usage.spend_micro) == (1800, limits.to_micro(logged_cost))


@db
async def test_saving_a_keys_limits_reseeds_its_counters_but_a_rotation_does_not(redis_limiter, alice) -> None:
    limiter = redis_limiter
    key = await _snapshot(alice, total_request_limit=10)
    await limiter.admit(key, uuid.uuid4())
    total = limiter._names(key.id)[4]
    client = _redis(limiter.redis_url)
    client.set(total, 999)
    await sync_to_async(alice.key.save)(update_fields=["key_prefix", "key_suffix", "key_hash", "updated_at"])
    assert client.get(total) == "999"
    await _snapshot(alice, total_request_limit=20)
    assert client.get(total) is None
    await limiter.admit(key, uuid.uuid4())
    assert client.get(total) == "1"  # the database knows no request yet; this one counts


# --- Redis unreachable ---------------------------------------------------------------------------


async def test_an_unreachable_redis_falls_back_to_in_process_limits_and_logs_an_error(caplog) -> None:
    made = Limiter("redis://127.0.0.1:1/0")
    key = _key(rpm_limit=2)
    with caplog.at_level(logging.ERROR, logger="accounts.limits"):
        await _admit_all(made, key, 2)
        assert (await _rejected(made, key)).code == "rpm_limit_exceeded"
    assert made.fallbacks == 2
    assert [r.message for r in caplog.records if "unreachable" in r.message][:1]
    assert sum("unreachable" in r.message for r in caplog.records) == 1  # logged once per outage
    await made.aclose()


@db
async def test_after_an_outage_the_counters_counted_in_process_are_seeded_again(
    redis_limiter, alice, monkeypatch
) -> None:
    limiter = redis_limiter
    key = await _snapshot(alice, total_request_limit=100)
    await limiter.admit(key, uuid.uuid4())
    total = limiter._names(key.id)[4]
    client = _redis(limiter.redis_url)
    assert client.get(total) == "1"

    def unreachable() -> None:
        raise redis.ConnectionError("Connection refused")

    with monkeypatch.context() as outage:
        outage.setattr(limiter, "_async_redis", unreachable)
        await limiter.admit(key, uuid.uuid4())  # counted in process, from the database's counters
    assert limiter.fallbacks == 1
    client.set(total, 50)  # what Redis held is no longer the truth
    limiter._down_until = 0.0  # the retry delay is over
    await limiter.admit(key, uuid.uuid4())
    assert client.get(total) == "1"  # seeded from the database (no row logged yet), plus this request


# --- the acceptance of issue 4: 200 parallel requests against RPM=50 ------------------------------


async def test_two_hundred_parallel_admits_against_rpm_50_admit_exactly_50(limiter) -> None:
    key = _key(rpm_limit=50)

    async def one(i: int) -> int:
        try:
            await limiter.admit(key, f"req-{i}")
        except RelayError as error:
            assert error.code == "rpm_limit_exceeded"
            return 0
        return 1

    assert sum(await asyncio.gather(*(one(i) for i in range(200)))) == 50
    assert limiter.fallbacks == 0


CHILD = """
import asyncio, json, os, sys
import django

django.setup()
from accounts.access import KeySnapshot
from accounts.limits import Limiter
from gateway.errors import RelayError

url, prefix, key_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


async def main():
    limiter = Limiter(url, prefix=prefix)
    client, _, _ = limiter._async_redis()
    await client.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    key = KeySnapshot(key_id, 1, "k", "", "h", True, None, (), frozenset(), frozenset(), "", rpm_limit=50)

    async def one(i):
        try:
            await limiter.admit(key, f"{os.getpid()}-{i}")
        except RelayError as error:
            assert error.code == "rpm_limit_exceeded", error.code
            return 0
        return 1

    admitted = sum(await asyncio.gather(*(one(i) for i in range(n))))
    print(json.dumps({"admitted": admitted, "fallbacks": limiter.fallbacks}), flush=True)
    await limiter.aclose()


asyncio.run(main())
"""


def test_two_processes_sharing_redis_admit_exactly_50_of_200_parallel_requests(redis_url, redis_prefix) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gateway.settings", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", CHILD, redis_url, redis_prefix, "4242", "100"]
    children = [
        subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for child in children:  # both connected before either starts
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert [child.returncode for child in children] == [0, 0]
    assert [r["fallbacks"] for r in results] == [0, 0]
    assert sum(r["admitted"] for r in results) == 50
    assert _redis(redis_url).zcard(f"{redis_prefix}rl:{{4242}}:rpm") == 50
