"""Request bodies age out; log rows stay."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from usage.models import LogStorageSettings, RequestBody, RequestLog
from usage.tasks import prune_request_bodies


def _log_with_body(age_days: float, size: int) -> RequestLog:
    row = RequestLog.objects.create(
        time=timezone.now() - dt.timedelta(days=age_days), client_dialect="openai-chat", status_code=200
    )
    RequestBody.objects.create(log=row, request=b"x" * size, size=size)
    return row


@pytest.mark.django_db
def test_bodies_older_than_the_retention_window_are_deleted_and_rows_kept() -> None:
    LogStorageSettings.objects.create(content_retention_days=30, max_total_size_mb=0)
    old, new = _log_with_body(31, 10), _log_with_body(1, 10)
    assert prune_request_bodies.apply().get() == 1
    assert not RequestBody.objects.filter(log=old).exists()
    assert RequestBody.objects.filter(log=new).exists()
    assert RequestLog.objects.count() == 2


@pytest.mark.django_db
def test_the_oldest_bodies_go_first_when_the_size_cap_is_exceeded() -> None:
    LogStorageSettings.objects.create(content_retention_days=0, max_total_size_mb=1)
    oldest, middle, newest = _log_with_body(3, 600_000), _log_with_body(2, 600_000), _log_with_body(1, 300_000)
    prune_request_bodies.apply().get()
    assert list(RequestBody.objects.values_list("log_id", flat=True).order_by("log_id")) == [middle.pk, newest.pk]
    assert oldest.pk not in RequestBody.objects.values_list("log_id", flat=True)
