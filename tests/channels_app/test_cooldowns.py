"""Cool-downs per (channel, upstream model): the §14.2 table, backoff, reset, and sharing through Redis.

Every behaviour runs twice: in-process, and against Redis (``REDIS_URL`` or 127.0.0.1:6379, each
test in its own namespace). The Redis runs are skipped, with the reason printed, when no Redis
answers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from channels_app import cooldowns
from channels_app.cooldowns import CooldownStore, penalty_for
from channels_app.executors.base import UpstreamError, UpstreamTimeout, UpstreamUnreachable

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def _redis_reason() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError as exc:
        reason = f"no Redis answers at {REDIS_URL}: {exc}"
        print(reason)
        return reason
    return ""


_NO_REDIS = _redis_reason()


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class FakeChannel:
    id: int = 7
    disable_cooling: bool = False
    transient_cooldown_s: int = 0


@dataclass(frozen=True)
class FakeRoute:
    channel: FakeChannel = FakeChannel()
    upstream_model: str = "gpt-up"
    key: str = ""  # "" = the channel's own key, "k3" = its extra key 3

    @property
    def credential(self) -> str:
        return f"{self.channel.id}{self.key}"


ROUTE = FakeRoute()


def _err(status: int, message: str = "upstream said no", **fields: object) -> UpstreamError:
    return UpstreamError(status, message, upstream_status=status, **fields)  # type: ignore[arg-type]


@pytest.fixture(params=["in-process", "redis"])
def mode(request: pytest.FixtureRequest) -> str:
    if request.param == "redis" and _NO_REDIS:
        pytest.skip(_NO_REDIS)
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _stores(url: str, clock: Clock) -> Iterator[type[CooldownStore]]:
    """Builds stores sharing one namespace (two stores = two processes), cleaned up afterwards."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    made: list[CooldownStore] = []

    def build(**options: object) -> CooldownStore:
        store = CooldownStore(url, namespace=namespace, clock=clock, **options)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield build  # type: ignore[misc]
    if url and made:
        made[0].clear()
    for store in made:
        store.close()


@pytest.fixture
def make_store(mode: str, clock: Clock) -> Iterator[type[CooldownStore]]:
    yield from _stores(REDIS_URL if mode == "redis" else "", clock)


@pytest.fixture
def make_redis_store(clock: Clock) -> Iterator[type[CooldownStore]]:
    if _NO_REDIS:
        pytest.skip(_NO_REDIS)
    yield from _stores(REDIS_URL, clock)


@pytest.fixture
def store(make_store) -> CooldownStore:
    return make_store()


# --- the table --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "seconds"),
    [
        (_err(401), 1800),
        (_err(402), 1800),
        (_err(403), 1800),
        (_err(404), 12 * 3600),
        (_err(408), 60),
        (_err(500), 60),
        (_err(502), 60),
        (_err(503), 60),
        (_err(504), 60),
        (_err(418), 60),
        (UpstreamTimeout("slow"), 60),
        (UpstreamUnreachable("refused"), 60),
        (_err(429, cooldown_s=42.0), 42),
        (_err(400, "invalid_grant: token revoked"), 1800),
        (_err(400, "The requested model is not supported"), 12 * 3600),
        (_err(422, "model gpt-x is not available for your plan"), 12 * 3600),
        (_err(400), None),
        (_err(409), None),
        (_err(413), None),
        (_err(422), None),
        (_err(499), None),
        (_err(500, "context_length_exceeded: too many tokens"), None),
        (_err(403, "Your prompt was flagged: cyber_policy"), None),
    ],
    ids=lambda value: getattr(value, "message", None) and f"{value.upstream_status}-{value.message[:20]}",
)
def test_each_upstream_failure_earns_the_cool_down_of_the_spec_table(err: UpstreamError, seconds: int | None) -> None:
    penalty = penalty_for(err)
    assert (penalty.seconds if penalty else None) == seconds


def test_request_scoped_errors_stop_the_retry_loop_and_channel_failures_do_not() -> None:
    assert cooldowns.is_request_scoped(_err(400)) and cooldowns.is_request_scoped(_err(413))
    assert cooldowns.is_request_scoped(_err(500, "context_length_exceeded"))
    assert not cooldowns.is_request_scoped(_err(429)) and not cooldowns.is_request_scoped(UpstreamTimeout("slow"))


def test_a_429_without_retry_after_asks_for_the_exponential_backoff() -> None:
    assert penalty_for(_err(429)) == cooldowns.Penalty("quota", backoff=True)
    assert [cooldowns.backoff_seconds(level) for level in range(5)] == [1, 2, 4, 8, 16]
    assert cooldowns.backoff_seconds(11) == cooldowns.backoff_seconds(40) == 1800


def test_the_transient_setting_changes_the_408_and_5xx_cool_down() -> None:
    assert penalty_for(_err(503), transient_seconds=5) == cooldowns.Penalty("transient", 5)
    assert penalty_for(_err(503), transient_seconds=-1) is None
    assert penalty_for(_err(401), transient_seconds=-1) == cooldowns.Penalty("unauthorized", 1800)


# --- the store, in both modes -----------------------------------------------------------------


def test_a_failure_cools_only_its_channel_and_model(store: CooldownStore) -> None:
    assert store.mark_failure(ROUTE, _err(503)) == pytest.approx(60)
    assert store.cooling(7, "gpt-up") == pytest.approx(60)
    assert store.cooling(7, "other") is None
    assert store.cooling(8, "gpt-up") is None


def test_a_cool_down_ends_when_its_time_is_up(store: CooldownStore, clock: Clock) -> None:
    store.mark_failure(ROUTE, _err(503))
    clock.now += 59
    assert store.cooling(7, "gpt-up") == pytest.approx(1)
    clock.now += 1
    assert store.cooling(7, "gpt-up") is None


def test_repeated_429s_back_off_exponentially_up_to_thirty_minutes(store: CooldownStore, clock: Clock) -> None:
    waits = []
    for _ in range(14):
        waits.append(round(store.mark_failure(ROUTE, _err(429)) or 0))
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1800, 1800, 1800]


def test_a_429_with_retry_after_waits_that_long_and_keeps_the_backoff_level(store: CooldownStore, clock: Clock) -> None:
    store.mark_failure(ROUTE, _err(429))
    clock.now += 1
    assert store.mark_failure(ROUTE, _err(429, cooldown_s=90.0)) == pytest.approx(90)
    clock.now += 90
    assert store.mark_failure(ROUTE, _err(429)) == pytest.approx(2)


def test_a_later_deadline_is_never_shortened(store: CooldownStore) -> None:
    store.mark_failure(ROUTE, _err(404))
    assert store.mark_failure(ROUTE, _err(429, cooldown_s=5.0)) == pytest.approx(12 * 3600)
    assert store.cooling(7, "gpt-up") == pytest.approx(12 * 3600)


def test_success_clears_the_cool_down_and_the_backoff_level(store: CooldownStore, clock: Clock) -> None:
    store.mark_failure(ROUTE, _err(429))
    clock.now += 1
    store.mark_failure(ROUTE, _err(429))
    store.mark_success(ROUTE)
    assert store.cooling(7, "gpt-up") is None
    assert store.mark_failure(ROUTE, _err(429)) == pytest.approx(1)


def test_request_scoped_errors_and_disabled_cooling_change_nothing(store: CooldownStore) -> None:
    assert store.mark_failure(ROUTE, _err(400)) is None
    relaxed = FakeRoute(channel=FakeChannel(disable_cooling=True))
    assert store.mark_failure(relaxed, _err(429)) is None
    assert store.cooling(7, "gpt-up") is None


def test_a_credential_wide_failure_cools_every_model_of_the_credential(store: CooldownStore) -> None:
    store.mark_failure(ROUTE, _err(429, cooldown_s=30.0), whole_credential=True)
    assert store.cooling(7, "anything") == pytest.approx(30)
    store.mark_success(FakeRoute(upstream_model="anything"))
    assert store.cooling(7, "gpt-up") is None


def test_an_error_scoped_to_the_credential_cools_all_its_models_and_one_scoped_to_the_request_nothing(
    store: CooldownStore,
) -> None:
    assert store.mark_failure(ROUTE, _err(429, cooldown_s=45.0, scope="credential")) == pytest.approx(45)
    assert store.cooling(7, "other-model") == pytest.approx(45)
    assert store.mark_failure(FakeRoute(key="k3"), _err(429, scope="request")) is None
    assert store.cooling("7k3", "gpt-up") is None


def test_each_key_of_a_channel_cools_down_on_its_own_in_every_process(make_redis_store) -> None:
    one, two = make_redis_store(), make_redis_store()
    one.mark_failure(FakeRoute(key="k3"), _err(429, cooldown_s=20.0))
    two.refresh(force=True)
    for store in (one, two):
        assert store.cooling("7k3", "gpt-up") == pytest.approx(20)
        assert store.cooling(7, "gpt-up") is None and store.cooling("7k4", "gpt-up") is None


async def test_the_async_api_marks_refreshes_and_resets(store: CooldownStore) -> None:
    assert await store.amark_failure(ROUTE, _err(429, cooldown_s=12.0)) == pytest.approx(12)
    await store.arefresh(force=True)
    assert store.cooling(7, "gpt-up") == pytest.approx(12)
    await store.amark_success(ROUTE)
    await store.arefresh(force=True)
    assert store.cooling(7, "gpt-up") is None
    await store.aclose()


def test_the_module_functions_use_the_process_store(clock: Clock) -> None:
    cooldowns.use(CooldownStore(clock=clock))
    cooldowns.mark_failure(ROUTE, _err(502))
    assert cooldowns.cooling(7, "gpt-up") == pytest.approx(60)
    cooldowns.mark_success(ROUTE)
    assert cooldowns.cooling(7, "gpt-up") is None


# --- shared through Redis ---------------------------------------------------------------------


def test_a_failure_marked_by_one_process_is_seen_by_another_after_a_refresh(make_redis_store) -> None:
    one, two = make_redis_store(), make_redis_store()
    one.mark_failure(ROUTE, _err(429, cooldown_s=20.0))
    assert two.cooling(7, "gpt-up") is None  # not yet: the mirror is read, not Redis
    two.refresh(force=True)
    assert two.cooling(7, "gpt-up") == pytest.approx(20)
    two.mark_success(ROUTE)
    one.refresh(force=True)
    assert one.cooling(7, "gpt-up") is None


def test_the_backoff_level_is_shared_between_processes(make_redis_store, clock: Clock) -> None:
    one, two = make_redis_store(), make_redis_store()
    assert one.mark_failure(ROUTE, _err(429)) == pytest.approx(1)
    clock.now += 1
    assert two.mark_failure(ROUTE, _err(429)) == pytest.approx(2)


async def test_the_mirror_is_refreshed_at_most_once_per_interval(make_redis_store) -> None:
    one, two = make_redis_store(), make_redis_store(refresh_seconds=3600)
    await two.arefresh()
    await one.amark_failure(ROUTE, _err(503))
    await two.arefresh()
    assert two.cooling(7, "gpt-up") is None
    await two.arefresh(force=True)
    assert two.cooling(7, "gpt-up") == pytest.approx(60)
    await one.aclose()
    await two.aclose()


def test_keys_carry_the_deadline_and_level_and_expire_after_the_backoff_memory(make_redis_store, clock: Clock) -> None:
    store = make_redis_store()
    store.mark_failure(ROUTE, _err(429))
    client = redis.Redis.from_url(REDIS_URL)
    key = f"{store.namespace}:cd:7:gpt-up"
    deadline, level = client.get(key).decode().split()
    assert float(deadline) == pytest.approx(clock.now + 1) and level == "1"
    assert 1800 < client.pttl(key) / 1000 <= 1801
    assert client.zscore(f"{store.namespace}:cd", "7:gpt-up") == pytest.approx(clock.now + 1)
    client.close()


def test_when_redis_is_unreachable_the_process_cools_pairs_itself_and_stops_asking_for_a_while(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = CooldownStore("redis://127.0.0.1:1/0", clock=clock)
    assert store.mark_failure(ROUTE, _err(503)) == pytest.approx(60)
    assert store.mark_failure(FakeRoute(upstream_model="other"), _err(429)) == pytest.approx(1)
    store.refresh(force=True)
    assert store.cooling(7, "gpt-up") == pytest.approx(60) and store.cooling(7, "other") == pytest.approx(1)
    assert len([r for r in caplog.records if "Redis" in r.getMessage()]) == 1
