"""Key resolution: where clients put keys, and what makes one invalid."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from django.test import RequestFactory
from django.utils import timezone

from accounts import access
from accounts.keys import generate_key, hash_key
from accounts.models import ApiKey
from gateway.encryption import mask
from gateway.errors import RelayError

rf = RequestFactory()


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"HTTP_AUTHORIZATION": "Bearer sk-one"}, "", "sk-one"),
        ({"HTTP_AUTHORIZATION": "bearer sk-one"}, "", "sk-one"),
        ({"HTTP_AUTHORIZATION": "sk-raw"}, "", "sk-raw"),
        ({"HTTP_X_API_KEY": "sk-anthropic"}, "", "sk-anthropic"),
        ({"HTTP_X_GOOG_API_KEY": "sk-google"}, "", "sk-google"),
        ({}, "key=sk-query", "sk-query"),
        ({}, "auth_token=sk-token", "sk-token"),
        ({}, "", ""),
    ],
)
def test_it_finds_the_key_wherever_the_client_dialect_puts_it(headers, query, expected) -> None:
    request = rf.get(f"/v1/models?{query}", **headers)
    assert access.credential_from(request) == expected


def test_generated_keys_have_the_documented_shape_and_hash_stably() -> None:
    raw = generate_key()
    assert raw.startswith("sk-") and len(raw) == 35 and raw[3:].isalnum() and raw[3:].islower() | raw[3:].isdigit()
    assert hash_key(raw) == hash_key(raw) and len(hash_key(raw)) == 64
    assert mask(raw) == f"{raw[:5]}…{raw[-3:]}"


@pytest.mark.django_db(transaction=True)
async def test_it_resolves_a_valid_key_and_rejects_disabled_expired_and_unknown_ones(alice) -> None:
    request = rf.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {alice.raw_key}")
    snapshot = await access.aresolve_api_key(request)
    assert snapshot.id == alice.key.pk and snapshot.team_id == alice.team.pk
    assert snapshot.display == alice.key.masked

    with pytest.raises(RelayError) as missing:
        await access.aresolve_api_key(rf.get("/v1/models"))
    assert (missing.value.status, missing.value.code) == (401, "missing_api_key")

    with pytest.raises(RelayError) as unknown:
        await access.aresolve_api_key(rf.get("/v1/models", HTTP_AUTHORIZATION="Bearer sk-nope"))
    assert unknown.value.code == "invalid_api_key"

    alice.key.expires_at = timezone.now() - dt.timedelta(seconds=1)
    await alice.key.asave()
    with pytest.raises(RelayError) as expired:
        await access.aresolve_api_key(request)
    assert expired.value.code == "api_key_expired"

    alice.key.expires_at = None
    alice.key.enabled = False
    await alice.key.asave()
    with pytest.raises(RelayError) as disabled:
        await access.aresolve_api_key(request)
    assert disabled.value.code == "invalid_api_key"


@pytest.mark.django_db(transaction=True)
def test_a_cached_key_is_served_without_touching_the_database(alice, django_assert_num_queries) -> None:
    request = rf.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {alice.raw_key}")
    resolve = async_to_sync(access.aresolve_api_key)
    resolve(request)
    with django_assert_num_queries(0):
        resolve(request)


@pytest.mark.django_db(transaction=True)
async def test_concurrent_first_requests_for_a_key_share_one_database_read(alice, monkeypatch) -> None:
    reads = []
    real_load = access._load
    monkeypatch.setattr(access, "_load", lambda digest: reads.append(digest) or real_load(digest))
    request = rf.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {alice.raw_key}")

    snapshots = await asyncio.gather(*(access.aresolve_api_key(request) for _ in range(20)))

    assert {s.id for s in snapshots} == {alice.key.pk}
    assert len(reads) == 1


@pytest.mark.django_db(transaction=True)
async def test_an_expired_entry_is_served_while_one_background_read_refreshes_it(alice, monkeypatch, settings) -> None:
    settings.CLIRELAY_KEY_CACHE_SECONDS = 0
    request = rf.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {alice.raw_key}")
    await access.aresolve_api_key(request)
    # Renamed behind this process's back (no signal): the cached copy still has the old name.
    await ApiKey.objects.filter(pk=alice.key.pk).aupdate(name="renamed elsewhere")

    stale = await access.aresolve_api_key(request)
    await asyncio.gather(*access._background)  # the one refresh the stale answer started
    fresh = await access.aresolve_api_key(request)
    await asyncio.gather(*access._background)

    assert (stale.name, fresh.name) == (alice.key.name, "renamed elsewhere")
