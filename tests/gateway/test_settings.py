"""The two deployment modes: embedded by default, shared servers when configured."""

from __future__ import annotations

import os
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from gateway.celery import app as celery_app


def test_with_no_environment_it_runs_embedded_and_otherwise_on_redis() -> None:
    layer = get_channel_layer()
    if settings.REDIS_URL:
        assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
        assert type(layer).__name__ == "RedisChannelLayer"
        assert celery_app.conf.broker_url == settings.REDIS_URL
        assert not celery_app.conf.task_always_eager
    else:
        assert settings.CACHES["default"]["BACKEND"].endswith("LocMemCache")
        assert type(layer).__name__ == "InMemoryChannelLayer"
        assert celery_app.conf.task_always_eager


def test_the_cache_and_the_channel_layer_work_in_the_configured_mode() -> None:
    key = f"probe-{uuid.uuid4()}"
    cache.set(key, "value", 30)
    assert cache.get(key) == "value"
    cache.delete(key)

    layer = get_channel_layer()
    assert layer is not None
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.send)(channel, {"type": "probe", "n": 1})
    assert async_to_sync(layer.receive)(channel) == {"type": "probe", "n": 1}


@pytest.mark.django_db
def test_the_database_is_the_one_database_url_names() -> None:
    url = os.environ.get("DATABASE_URL", "")
    assert connection.vendor == ("postgresql" if url.startswith("postgres") else "sqlite")
