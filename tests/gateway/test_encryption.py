"""Upstream secrets are encrypted at rest and masked on display."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from channels_app.models import Channel, ProviderKind
from gateway import encryption


@pytest.mark.django_db
def test_a_channel_secret_is_stored_encrypted_and_read_back_plain(alice) -> None:
    channel = Channel.objects.create(
        team=alice.team, name="c", kind=ProviderKind.OPENAI_COMPATIBILITY, secret="sk-live-very-secret-value"
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM channels_app_channel WHERE id = %s", [channel.pk])
        stored = cursor.fetchone()[0]
    assert "sk-live" not in stored and stored.startswith("fernet:")
    assert Channel.objects.get(pk=channel.pk).secret == "sk-live-very-secret-value"
    assert channel.masked_secret == "sk-li…lue"


def test_keys_rotate_with_several_fernet_keys(settings) -> None:
    old = Fernet.generate_key().decode()
    settings.CLIRELAY_ENCRYPTION_KEY = old
    encryption._fernet.cache_clear()
    stored = encryption.encrypt("upstream-token")
    settings.CLIRELAY_ENCRYPTION_KEY = Fernet.generate_key().decode() + "," + old
    encryption._fernet.cache_clear()
    try:
        assert encryption.decrypt(stored) == "upstream-token"
    finally:
        encryption._fernet.cache_clear()


def test_a_wrong_key_is_a_clear_error(settings) -> None:
    stored = encryption.encrypt("x")
    settings.CLIRELAY_ENCRYPTION_KEY = Fernet.generate_key().decode()
    encryption._fernet.cache_clear()
    try:
        with pytest.raises(ValueError, match="CLIRELAY_ENCRYPTION_KEY"):
            encryption.decrypt(stored)
    finally:
        encryption._fernet.cache_clear()


@pytest.mark.parametrize(
    ("secret", "shown"), [("", ""), ("abc", "a…"), ("sk-1234567", "sk-…67"), ("sk-abcdefghijxyz", "sk-ab…xyz")]
)
def test_masking_never_shows_enough_to_use_a_secret(secret: str, shown: str) -> None:
    assert encryption.mask(secret) == shown
