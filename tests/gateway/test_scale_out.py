"""200 parallel requests against RPM=50 admit exactly 50: in one process, and across two sharing Redis.

The two-process test starts two real gateway servers (``daphne``, the command ``make run`` uses) on
free ports. Both use the test database (the test process writes the key and the channel there) and
one Redis, and the fake OpenAI upstream in this process answers for both. Redis is the one in
``REDIS_URL`` (it must answer), else a local one at 127.0.0.1:6379 (database ``LOCAL_REDIS_DB``) when
it answers; with no Redis the test skips and says why. The key gets a random id far above any the
database hands out, so counters of concurrent test runs against the same Redis never meet, and its
counters are deleted before and after.

The single-process test drives the in-thread gateway with a limiter of its own (the backend the
settings choose, under a key prefix of its own).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection
from redis.exceptions import RedisError

from accounts.limits import Limiter
from accounts.models import ApiKey
from channels_app.models import Channel, ProviderKind
from tests.conftest import Persona
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.server import free_port
from tests.gateway.conftest import CLIENT_MODEL, UPSTREAM_MODEL, UPSTREAM_SECRET, Gateway
from tests.gateway.isolated_limits import isolated_limiter

pytestmark = pytest.mark.django_db(transaction=True)

BIN = Path(sys.executable).parent
LOCAL_REDIS_DB = 14  # a database of its own on a local Redis, so nothing else there is touched
RPM = 50
REQUESTS = 200
BODY = {"model": CLIENT_MODEL, "messages": [{"role": "user", "content": "hi"}]}


# --- Redis -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> str:
    """``REDIS_URL`` (which must answer), else a local Redis if one answers, else skip saying why."""
    configured = os.environ.get("REDIS_URL", "")
    url = configured or f"redis://127.0.0.1:6379/{LOCAL_REDIS_DB}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        client.ping()
        client.close()
    except (RedisError, OSError) as exc:
        if configured:
            pytest.fail(f"REDIS_URL={configured} does not answer: {exc}")
        pytest.skip(
            f"no Redis answers at {url} ({exc}): two gateway processes share limits only through Redis; "
            "set REDIS_URL or start redis-server to run this test"
        )
    return url


def _drop_key_counters(url: str, key_id: int) -> None:
    """Delete every limit counter of ``key_id`` (``relay:…{id}…``, accounts/limits.py), nothing else."""
    client = redis.Redis.from_url(url)
    try:
        names = list(client.scan_iter(match=f"relay:*{{{key_id}}}*", count=1000))
        if names:
            client.delete(*names)
    finally:
        client.close()


# --- two gateway processes ---------------------------------------------------------------------


@dataclass
class ScaledOut:
    urls: list[str]
    raw_key: str


def _database_url() -> str:
    """The test database as a ``DATABASE_URL`` for another process."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    assert "postgresql" in db["ENGINE"], f"unsupported database engine {db['ENGINE']}"
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}{host}{port}/{db['NAME']}"


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"daphne exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"daphne did not answer /healthz within {timeout}s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def scaled_out(tmp_path: Path, redis_url: str, alice: Persona, upstream: FakeOpenAIUpstream) -> Iterator[ScaledOut]:
    """Two ``daphne`` gateways on one database and one Redis, a key limited to RPM and a channel to the fake."""
    upstream.script.api_key = UPSTREAM_SECRET
    Channel.objects.create(
        team=alice.team,
        kind=ProviderKind.OPENAI_COMPATIBILITY,
        name="fake-openai",
        base_url=upstream.base_url,
        secret=UPSTREAM_SECRET,
        served_models=[{"name": UPSTREAM_MODEL, "alias": CLIENT_MODEL}],
    )
    key = ApiKey(pk=secrets.randbelow(10**15) + 10**12, team=alice.team, name="scale-out", rpm_limit=RPM)
    raw_key = key.issue_key()
    key.save(force_insert=True)
    _drop_key_counters(redis_url, key.pk)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": redis_url,
        # The test process's secrets: the key's HMAC and the channel's encrypted secret must agree.
        "SECRET_KEY": settings.SECRET_KEY,
        "API_KEY_PEPPER": settings.API_KEY_PEPPER,
        "CLIRELAY_ENCRYPTION_KEY": settings.CLIRELAY_ENCRYPTION_KEY,
        "CLIRELAY_DATA_DIR": str(tmp_path / "data"),
        "LOG_LEVEL": "WARNING",
    }
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    ports = {free_port()}
    while len(ports) < 2:
        ports.add(free_port())
    urls = [f"http://127.0.0.1:{port}" for port in sorted(ports)]
    try:
        for index, url in enumerate(urls):
            log = (tmp_path / f"daphne-{index}.log").open("wb")
            logs.append(log)
            port = url.rpartition(":")[2]
            processes.append(
                subprocess.Popen(
                    [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", port, "--proxy-headers", "gateway.asgi:application"],
                    cwd=settings.BASE_DIR,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for index, (url, process) in enumerate(zip(urls, processes, strict=True)):
            _wait_until_healthy(url, process, tmp_path / f"daphne-{index}.log")
        yield ScaledOut(urls=urls, raw_key=raw_key)
    finally:
        for process in processes:
            _stop(process)
        for log in logs:
            log.close()
        _drop_key_counters(redis_url, key.pk)


# --- firing ------------------------------------------------------------------------------------


async def _fire(urls: list[str], raw_key: str, n: int) -> list[tuple[str, httpx.Response]]:
    """``n`` chat completions at once, spread over ``urls`` in turn; (url, response) of each."""
    limits_ = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    headers = {"Authorization": f"Bearer {raw_key}"}
    async with httpx.AsyncClient(limits=limits_, timeout=60.0, trust_env=False, headers=headers) as client:
        targets = [urls[i % len(urls)] for i in range(n)]
        answers = await asyncio.gather(*(client.post(f"{url}/v1/chat/completions", json=BODY) for url in targets))
    return list(zip(targets, answers, strict=True))


def _warm(urls: list[str], raw_key: str) -> None:
    """Load the key and the routing table in each process without spending a request of the limit."""
    for url in urls:
        listed = httpx.get(
            f"{url}/v1/models", headers={"Authorization": f"Bearer {raw_key}"}, timeout=10.0, trust_env=False
        )
        assert listed.status_code == 200, listed.text
        assert [m["id"] for m in listed.json()["data"]] == [CLIENT_MODEL]


def _assert_exactly_rpm_admitted(answers: list[tuple[str, httpx.Response]], upstream: FakeOpenAIUpstream) -> None:
    statuses = Counter(response.status_code for _, response in answers)
    assert statuses == {200: RPM, 429: REQUESTS - RPM}, statuses
    for _, response in answers:
        if response.status_code == 200:
            assert response.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream."
            continue
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["x-relay-error-code"] == "rpm_limit_exceeded"
        error = response.json()["error"]
        assert error["code"] == "rpm_limit_exceeded"
        assert error["message"] == f"RPM limit ({RPM} requests/min) exceeded for this API key"
    assert len(upstream.requests) == RPM


# --- the tests -----------------------------------------------------------------------------------


def test_two_gateway_processes_sharing_redis_admit_exactly_the_rpm_limit_of_200_parallel_requests(
    scaled_out: ScaledOut, upstream: FakeOpenAIUpstream
) -> None:
    _warm(scaled_out.urls, scaled_out.raw_key)

    answers = asyncio.run(_fire(scaled_out.urls, scaled_out.raw_key, REQUESTS))

    _assert_exactly_rpm_admitted(answers, upstream)
    per_process = Counter(url for url, _ in answers)
    assert sorted(per_process.values()) == [REQUESTS // 2, REQUESTS // 2]  # both processes served their half


@pytest.fixture
def own_limiter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Limiter]:
    """The process's limiter, on the backend the settings choose, with counters no other test shares."""
    with isolated_limiter(monkeypatch, "scale-out") as made:
        yield made


def test_one_gateway_process_admits_exactly_the_rpm_limit_of_200_parallel_requests(
    gateway: Gateway, own_limiter: Limiter, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    alice.key.rpm_limit = RPM
    alice.key.save()
    _warm([gateway.url], alice.raw_key)

    answers = asyncio.run(_fire([gateway.url], alice.raw_key, REQUESTS))

    _assert_exactly_rpm_admitted(answers, upstream)
