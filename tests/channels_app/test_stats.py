"""Per-channel counters and latency averages, folded in from the recorder's batches."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from channels_app import stats
from channels_app.models import Channel, ProviderKind
from usage.recorder import UsageEvent


def _channel(team, name: str) -> Channel:
    return Channel.objects.create(team=team, name=name, kind=ProviderKind.OPENAI_COMPATIBILITY, secret="sk")


def _event(channel: Channel | None, status: int = 200, latency: int = 100, ttfb: int = 10) -> UsageEvent:
    return UsageEvent(
        time=timezone.now(),
        request_id=uuid.uuid4(),
        client_dialect="openai",
        path="/v1/chat/completions",
        requested_model="gpt",
        stream=False,
        status_code=status,
        channel_id=channel.pk if channel else None,
        latency_ms=latency,
        ttfb_ms=ttfb,
    )


def test_the_ewma_of_samples_folds_like_one_sample_at_a_time() -> None:
    average = 100.0
    for x in (200.0, 50.0, 400.0):
        average += stats.ALPHA * (x - average)
    decay, contribution = stats.fold([200.0, 50.0, 400.0])
    assert 100.0 * decay + contribution == pytest.approx(average)
    assert stats.seed([200.0, 50.0]) == pytest.approx(200.0 + 0.2 * (50.0 - 200.0))


@pytest.mark.django_db
def test_a_batch_counts_successes_and_failures_per_channel(alice) -> None:
    a, b = _channel(alice.team, "a"), _channel(alice.team, "b")
    stats.apply_batch([_event(a), _event(a), _event(a, 502), _event(b, 429), _event(b, 499), _event(None)])
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.success_count, a.failure_count, b.success_count, b.failure_count) == (2, 1, 0, 1)


@pytest.mark.django_db
def test_the_first_batch_seeds_the_averages_and_later_ones_fold_in(alice) -> None:
    a = _channel(alice.team, "a")
    stats.apply_batch([_event(a, latency=1000, ttfb=100), _event(a, latency=2000, ttfb=0)])
    a.refresh_from_db()
    assert a.latency_ewma_ms == pytest.approx(1200) and a.ttfb_ewma_ms == pytest.approx(100)
    stats.apply_batch([_event(a, latency=200, ttfb=300), _event(a, 500, latency=99_999)])
    a.refresh_from_db()
    assert a.latency_ewma_ms == pytest.approx(1200 * 0.8 + 200 * 0.2)
    assert a.ttfb_ewma_ms == pytest.approx(100 * 0.8 + 300 * 0.2)


@pytest.mark.django_db
def test_each_channel_costs_one_update_per_batch(alice) -> None:
    a, b = _channel(alice.team, "a"), _channel(alice.team, "b")
    with CaptureQueriesContext(connection) as queries:
        stats.apply_batch([_event(a)] * 50 + [_event(b, 503)] * 50)
    assert len(queries) == 2 and all(q["sql"].startswith("UPDATE") for q in queries)


@pytest.mark.django_db
def test_updating_counters_leaves_updated_at_alone(alice) -> None:
    a = _channel(alice.team, "a")
    before = a.updated_at
    stats.apply_batch([_event(a)])
    a.refresh_from_db()
    assert a.updated_at == before and a.success_count == 1


@pytest.mark.django_db(transaction=True)
def test_batches_from_two_drainers_at_once_lose_no_count(alice) -> None:
    a = _channel(alice.team, "a")

    def drain() -> None:
        for _ in range(10):
            stats.apply_batch([_event(a)] * 3)
        connection.close()

    threads = [threading.Thread(target=drain) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    a.refresh_from_db()
    assert a.success_count == 60


@pytest.mark.django_db
def test_a_database_error_is_logged_and_swallowed(alice, caplog) -> None:
    channel = _channel(alice.team, "a")

    def locked(*args: object) -> None:
        raise OperationalError("database is locked")

    with connection.execute_wrapper(locked):
        stats.apply_batch([_event(channel)])
    assert "applying a batch failed" in caplog.text


@pytest.mark.django_db
def test_the_admin_channel_list_shows_counters_and_latency_to_the_team_only(alice, charlie, client) -> None:
    a = _channel(alice.team, "counted")
    stats.apply_batch([_event(a, latency=1234, ttfb=321), _event(a, 502)])
    client.force_login(alice.user)
    page = client.get("/admin/channels_app/channel/").content.decode()
    assert "1234 (321)" in page and "Success count" in page and "Failure count" in page
    client.force_login(charlie.user)
    assert "1234 (321)" not in client.get("/admin/channels_app/channel/").content.decode()
