"""The usage recorder: a queue put on the request path, batched inserts off it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
import zstandard
from django.utils import timezone

from channels_app.models import ModelPrice
from usage.models import LogStorageSettings, RequestBody, RequestLog
from usage.recorder import Recorder, UsageEvent


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
    real = RequestLog.objects.bulk_create
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(RequestLog.objects, "bulk_create", flaky)
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
