"""The usage recorder: a queue put on the request path, batched inserts off it."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import zstandard
from django.db import OperationalError, connection
from django.utils import timezone

from channels_app.models import ModelPrice
from usage.models import LogStorageSettings, RequestBody, RequestLog
from usage.recorder import Recorder, RowWriter, UsageEvent


def _event(**overrides: object) -> UsageEvent:
    values: dict[str, object] = {
        "time": timezone.now(),
        "request_id": uuid.uuid4(),
        "client_dialect": "openai-chat",
        "path": "/v1/chat/completions",
        "requested_model": "gpt-test",
        "upstream_model": "gpt-upstream",
        "stream": False,
        "status_code": 200,
        "input_tokens": 1000,
        "cached_tokens": 400,
        "output_tokens": 100,
        "total_tokens": 1100,
    }
    values.update(overrides)
    return UsageEvent(**values)  # type: ignore[arg-type]


@pytest.mark.django_db(transaction=True)
def test_recorded_events_are_written_in_one_batch_with_compressed_bodies() -> None:
    recorder = Recorder(autostart=False)
    for i in range(25):
        recorder.record(_event(request_body=b'{"n": %d}' % i, response_body=b"ok"))
    assert recorder.flush()
    assert RequestLog.objects.count() == 25
    body = RequestBody.objects.select_related("log").first()
    assert body is not None
    assert zstandard.ZstdDecompressor().decompress(bytes(body.request)).startswith(b'{"n": ')
    assert recorder.backlog() == 0 and recorder.written == 25


def test_a_caller_hands_the_drainer_the_gil_only_when_it_is_two_batches_behind(settings, monkeypatch) -> None:
    settings.CLIRELAY_RECORDER_BATCH = 3
    recorder = Recorder(autostart=False)
    yields: list[float] = []
    monkeypatch.setattr("usage.recorder.time.sleep", yields.append)

    for _ in range(6):
        recorder.record(_event())
    assert yields == []  # six queued: two batches, not more
    recorder.record(_event())
    recorder.record(_event())
    assert yields == [0, 0]  # one GIL hand-over per event past the mark, nothing else waited for


@pytest.mark.django_db(transaction=True)
def test_cost_charges_cached_tokens_once_at_the_cached_price() -> None:
    ModelPrice.objects.create(
        model="gpt-up*",
        input_per_million=Decimal("2"),
        output_per_million=Decimal("8"),
        cached_per_million=Decimal("0.5"),
    )
    ModelPrice.objects.create(model="gpt-upstream", input_per_million=Decimal("1"), output_per_million=Decimal("4"))
    recorder = Recorder(autostart=False)
    recorder.record(_event())
    recorder.record(_event(upstream_model="gpt-upper"))
    recorder.flush()
    exact, pattern = (
        RequestLog.objects.get(upstream_model="gpt-upstream"),
        RequestLog.objects.get(upstream_model="gpt-upper"),
    )
    # exact price, no cached price: (600 + 400) * 1 + 100 * 4 per million
    assert exact.cost == Decimal("0.0014")
    # pattern price: 600 * 2 + 400 * 0.5 + 100 * 8 per million
    assert pattern.cost == Decimal("0.0022")


@pytest.mark.django_db(transaction=True)
def test_bodies_are_not_stored_when_content_storage_is_off() -> None:
    LogStorageSettings.objects.create(store_content=False)
    recorder = Recorder(autostart=False)
    recorder.record(_event(request_body=b"{}", response_body=b"{}"))
    recorder.flush()
    assert RequestLog.objects.count() == 1 and RequestBody.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_failed_insert_keeps_the_batch_and_writes_it_later(monkeypatch) -> None:
    recorder = Recorder(autostart=False)
    real = RowWriter.insert
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("database is locked")
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(RowWriter, "insert", flaky)
    recorder.record(_event())
    assert recorder.flush(timeout=5)
    assert RequestLog.objects.count() == 1 and recorder.failures == 1


@pytest.mark.django_db(transaction=True)
def test_a_row_the_database_refuses_is_dropped_and_the_rest_of_its_batch_is_kept() -> None:
    recorder = Recorder(autostart=False)
    recorder.record(_event(requested_model="good-1"))
    recorder.record(_event(requested_model="orphan", api_key_id=987654321))  # no such key
    recorder.record(_event(requested_model="good-2"))
    assert recorder.flush(timeout=5)
    assert sorted(RequestLog.objects.values_list("requested_model", flat=True)) == ["good-1", "good-2"]
    recorder.record(_event(requested_model="later"))
    assert recorder.flush(timeout=5)
    assert RequestLog.objects.filter(requested_model="later").exists()


# --- the raw-SQL writer: rows and bodies as the ORM stored them -------------------------------------


def _decompressed(data: bytes | memoryview) -> bytes:
    return zstandard.ZstdDecompressor().decompress(bytes(data)) if data else b""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("variable_limit", [32766, 70], ids=["one-statement", "split-statements"])
def test_each_body_lands_on_its_own_row_across_batches_of_rows_with_and_without_bodies(
    settings, monkeypatch, variable_limit: int
) -> None:
    settings.CLIRELAY_RECORDER_BATCH = 7
    # SQLite binds at most so many values per statement: a batch is cut into several multi-row INSERTs.
    monkeypatch.setattr("usage.recorder._variable_limit", lambda conn: variable_limit)
    recorder = Recorder(autostart=False)
    kinds = ["both", "none", "request", "none", "response", "both", "both", "none"] * 4
    for i, kind in enumerate(kinds):
        request = b'{"n": %d}' % i if kind in ("both", "request") else b""
        response = b'{"answer": %d}' % i if kind in ("both", "response") else b""
        recorder.record(_event(requested_model=f"m-{i}", request_body=request, response_body=response))
    assert recorder.flush()
    logs = list(RequestLog.objects.order_by("id"))
    assert [log.requested_model for log in logs] == [f"m-{i}" for i in range(len(kinds))]  # ids follow the queue
    bodies = {b.log_id: b for b in RequestBody.objects.all()}
    assert len(bodies) == sum(kind != "none" for kind in kinds)
    for i, (log, kind) in enumerate(zip(logs, kinds, strict=True)):
        if kind == "none":
            assert log.pk not in bodies
            continue
        body = bodies[log.pk]
        assert _decompressed(body.request) == (b'{"n": %d}' % i if kind in ("both", "request") else b"")
        assert _decompressed(body.response) == (b'{"answer": %d}' % i if kind in ("both", "response") else b"")
        assert body.size == len(bytes(body.request)) + len(bytes(body.response))


@pytest.mark.django_db(transaction=True)
def test_a_row_is_stored_exactly_as_the_orm_stores_it() -> None:
    ModelPrice.objects.create(
        model="gpt-up*", input_per_million=Decimal("2.5"), output_per_million=Decimal("10"), cached_per_million=None
    )
    at = dt.datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=ZoneInfo("Europe/Berlin"))
    event = _event(
        time=at,
        path="/v1/" + "p" * 300,
        requested_model="r" * 250,
        error_type="e" * 100,
        error_message="m\tü\n" * 1000,
        key_display="sk-ab…cd12",
        channel_name="naïve 'quoted' \\ channel",
        stream=True,
        status_code=502,
        input_tokens=123_457,
        cached_tokens=11,
        output_tokens=999,
    )
    recorder = Recorder(autostart=False)
    recorder.record(event)
    assert recorder.flush()
    stored = RequestLog.objects.get()
    expected = RequestLog.objects.create(
        time=event.time,
        request_id=event.request_id,
        attempt=event.attempt,
        key_display=event.key_display,
        channel_name=event.channel_name,
        client_dialect=event.client_dialect,
        path=event.path[:200],
        requested_model=event.requested_model[:200],
        upstream_model=event.upstream_model[:200],
        stream=event.stream,
        status_code=event.status_code,
        error_type=event.error_type[:64],
        error_message=event.error_message[:2000],
        input_tokens=event.input_tokens,
        output_tokens=event.output_tokens,
        cached_tokens=event.cached_tokens,
        total_tokens=event.total_tokens,
        # (123457 - 11) * 2.5 + 11 * 2.5 + 999 * 10 per million, to 8 places
        cost=Decimal("0.31863250"),
    )
    expected.refresh_from_db()
    fields = [f.attname for f in RequestLog._meta.concrete_fields if not f.primary_key]
    assert {f: getattr(stored, f) for f in fields} == {f: getattr(expected, f) for f in fields}
    assert stored.time == at and stored.cost == Decimal("0.3186325")


@pytest.mark.django_db(transaction=True)
def test_a_row_breaking_a_constraint_is_dropped_and_its_batch_keeps_bodies_and_counters_right(alice) -> None:
    from accounts.models import ApiKeyUsageCounter

    recorder = Recorder(autostart=False)
    key = {"api_key_id": alice.key.pk, "team_id": alice.team.pk}
    recorder.record(_event(requested_model="good-1", request_body=b"one", total_tokens=10, **key))
    recorder.record(_event(requested_model="negative", latency_ms=-5, request_body=b"bad", total_tokens=1000, **key))
    recorder.record(_event(requested_model="good-2", total_tokens=20, **key))
    recorder.record(_event(requested_model="good-3", response_body=b"three", total_tokens=30, **key))
    assert recorder.flush(timeout=5)
    stored = {log.requested_model: log for log in RequestLog.objects.all()}
    assert sorted(stored) == ["good-1", "good-2", "good-3"]
    assert _decompressed(RequestBody.objects.get(log=stored["good-1"]).request) == b"one"
    assert _decompressed(RequestBody.objects.get(log=stored["good-3"]).response) == b"three"
    assert RequestBody.objects.count() == 2
    counter = ApiKeyUsageCounter.objects.get(api_key=alice.key)
    assert (counter.total_requests, counter.total_tokens) == (3, 60)
    assert recorder.written == 3 and recorder.backlog() == 0


@pytest.mark.django_db(transaction=True)
def test_new_rows_never_take_the_id_of_a_deleted_one() -> None:
    recorder = Recorder(autostart=False)
    for i in range(5):
        recorder.record(_event(requested_model=f"first-{i}", request_body=b"x"))
    assert recorder.flush()
    highest = RequestLog.objects.order_by("-id")[0].pk
    RequestLog.objects.filter(pk__gte=highest - 1).delete()  # the newest rows (and their bodies) go
    for i in range(3):
        recorder.record(_event(requested_model=f"second-{i}", request_body=b"second-%d" % i))
    assert recorder.flush()
    second = list(RequestLog.objects.filter(requested_model__startswith="second").order_by("id"))
    assert [log.requested_model for log in second] == ["second-0", "second-1", "second-2"]
    assert second[0].pk > highest
    assert [_decompressed(log.body.request) for log in second] == [b"second-0", b"second-1", b"second-2"]


@pytest.mark.django_db(transaction=True)
def test_turning_content_storage_off_applies_to_the_next_batch(monkeypatch) -> None:
    recorder = Recorder(autostart=False)
    recorder.record(_event(request_body=b"{}"))
    assert recorder.flush()
    LogStorageSettings(store_content=False).save()  # here: the recorder hears of it at once
    recorder.record(_event(request_body=b"{}"))
    assert recorder.flush()
    assert RequestBody.objects.count() == 1
    # Another process's change (no signal here) is read within STORAGE_TTL.
    LogStorageSettings.objects.filter(pk=1).update(store_content=True)
    recorder.record(_event(request_body=b"{}"))
    assert recorder.flush()
    assert RequestBody.objects.count() == 1
    monkeypatch.setattr("usage.recorder.STORAGE_TTL", 0.0)
    recorder.record(_event(request_body=b"{}"))
    assert recorder.flush()
    assert RequestBody.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_flush_writes_from_any_thread_with_that_threads_connection() -> None:
    recorder = Recorder(autostart=False)
    recorder.record(_event(requested_model="main", request_body=b"main"))
    assert recorder.flush()
    done: list[bool] = []

    def other() -> None:
        recorder.record(_event(requested_model="thread", request_body=b"thread"))
        done.append(recorder.flush())
        connection.close()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert done == [True]
    assert {log.requested_model: _decompressed(log.body.request) for log in RequestLog.objects.all()} == {
        "main": b"main",
        "thread": b"thread",
    }
