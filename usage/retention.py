"""Retention of request bodies (``request-log-storage``): log rows stay, bodies age out."""

from __future__ import annotations

import datetime as dt

from django.db.models import Sum
from django.utils import timezone

from usage.models import LogStorageSettings, RequestBody


def prune_request_bodies(now: dt.datetime | None = None) -> int:
    """Delete bodies older than the retention window, then the oldest ones over the size cap."""
    settings = LogStorageSettings.load()
    now = now or timezone.now()
    deleted = 0
    if settings.content_retention_days > 0:
        cutoff = now - dt.timedelta(days=settings.content_retention_days)
        deleted += RequestBody.objects.filter(log__time__lt=cutoff).delete()[0]
    if settings.max_total_size_mb > 0:
        cap = settings.max_total_size_mb * 1024 * 1024
        total = RequestBody.objects.aggregate(total=Sum("size"))["total"] or 0
        while total > cap:
            oldest = list(RequestBody.objects.order_by("log__time", "log_id").values_list("log_id", "size")[:200])
            if not oldest:
                break
            drop, freed = [], 0
            for log_id, size in oldest:
                drop.append(log_id)
                freed += size
                if total - freed <= cap:
                    break
            deleted += RequestBody.objects.filter(log_id__in=drop).delete()[0]
            total -= freed
    return deleted
