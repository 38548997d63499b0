"""The request log in the admin: read-only, team-scoped, bodies shown decompressed."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import pytest
import zstandard
from django.contrib.auth.models import User
from django.utils import timezone

from tests.admin_pages import add_url, change_url, changelist_url, client_for, delete_url, is_hidden, page, viewer_of
from tests.conftest import Persona
from usage.bodies import readable
from usage.models import LogStorageSettings, RequestBody, RequestLog


def _log(persona: Persona, model: str, **extra: Any) -> RequestLog:
    fields: dict[str, Any] = {
        "time": timezone.now() - dt.timedelta(minutes=5),
        "team": persona.team,
        "api_key": persona.key,
        "key_display": persona.key.masked,
        "channel_name": f"{persona.team.slug}-upstream",
        "client_dialect": "openai-chat",
        "requested_model": model,
        "upstream_model": f"{model}-2025",
        "status_code": 200,
        "latency_ms": 1234,
        "ttfb_ms": 321,
        "total_tokens": 77,
    }
    fields.update(extra)
    return RequestLog.objects.create(**fields)


@pytest.fixture
def acme_log(alice: Persona) -> RequestLog:
    log = _log(alice, "acme-model")
    compress = zstandard.ZstdCompressor(level=3).compress
    request, response = compress(b'{"model":"acme-model","messages":[]}'), compress(b"data: {}\n\ndata: [DONE]\n\n")
    RequestBody.objects.create(log=log, request=request, response=response, size=len(request) + len(response))
    return log


@pytest.fixture
def globex_log(charlie: Persona) -> RequestLog:
    return _log(charlie, "globex-model", status_code=502)


def test_alice_lists_her_teams_attempts_and_not_globex(
    acme_log: RequestLog, globex_log: RequestLog, alice: Persona
) -> None:
    listing = page(client_for(alice.user), changelist_url(RequestLog))

    assert "acme-model" in listing and "acme-upstream" in listing
    assert alice.key.masked in listing
    assert "globex-model" not in listing
    assert "Globex" not in listing


def test_charlie_sees_nothing_of_alices_log(acme_log: RequestLog, charlie: Persona) -> None:
    client = client_for(charlie.user)

    assert "acme-model" not in page(client, changelist_url(RequestLog))
    assert is_hidden(client, change_url(acme_log))


def test_a_superuser_lists_every_teams_attempts(acme_log: RequestLog, globex_log: RequestLog, superuser: User) -> None:
    listing = page(client_for(superuser), changelist_url(RequestLog))

    assert "acme-model" in listing and "globex-model" in listing


def test_the_detail_page_shows_the_bodies_decompressed_and_pretty(acme_log: RequestLog, alice: Persona) -> None:
    detail = html.unescape(page(client_for(alice.user), change_url(acme_log)))

    assert '"model": "acme-model"' in detail  # pretty-printed JSON
    assert "data: [DONE]" in detail  # a stream, shown as it was
    assert 'name="_save"' not in detail  # read-only


def test_the_log_filters_by_outcome(acme_log: RequestLog, alice: Persona) -> None:
    _log(alice, "failed-model", status_code=503)
    client = client_for(alice.user)

    failed = page(client, changelist_url(RequestLog) + "?outcome=5xx")

    assert "failed-model" in failed and "acme-model" not in failed


def test_nobody_adds_or_changes_log_rows(acme_log: RequestLog, superuser: User) -> None:
    client = client_for(superuser)

    assert client.get(add_url(RequestLog)).status_code == 403
    assert client.post(change_url(acme_log), {"status_code": "200"}).status_code == 403


def test_only_superusers_delete_log_rows(acme_log: RequestLog, alice: Persona, superuser: User) -> None:
    assert client_for(alice.user).post(delete_url(acme_log), {"post": "yes"}).status_code == 403
    assert RequestLog.objects.filter(pk=acme_log.pk).exists()

    assert client_for(superuser).post(delete_url(acme_log), {"post": "yes"}).status_code == 302
    assert not RequestLog.objects.filter(pk=acme_log.pk).exists()


def test_a_viewer_reads_her_teams_log(acme_log: RequestLog, alice: Persona) -> None:
    client = client_for(viewer_of(alice.team))

    assert "acme-model" in page(client, changelist_url(RequestLog))
    assert "acme-model" in page(client, change_url(acme_log))


def test_log_storage_settings_are_a_superuser_singleton(db: None, alice: Persona, superuser: User) -> None:
    settings = LogStorageSettings.objects.create()
    client = client_for(superuser)

    assert client_for(alice.user).get(changelist_url(LogStorageSettings)).status_code == 403
    assert client.get(changelist_url(LogStorageSettings)).url == change_url(settings)
    assert client.get(add_url(LogStorageSettings)).status_code == 403
    assert client.get(delete_url(settings)).status_code == 403


def test_readable_cuts_long_bodies_and_keeps_non_json_as_is() -> None:
    compress = zstandard.ZstdCompressor().compress

    assert readable(compress(b"x" * 100), limit=10) == "x" * 10 + "\n… (truncated)"
    assert readable(compress(b"not json")) == "not json"
    assert readable(compress(b'{"a":1}')) == '{\n  "a": 1\n}'
