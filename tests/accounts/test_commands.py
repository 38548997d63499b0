"""The first-run commands `make run` relies on."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from accounts.keys import hash_key
from accounts.models import ApiKey, Team


@pytest.mark.django_db
def test_bootstrap_creates_a_superuser_with_a_generated_password_shown_once(settings) -> None:
    settings.CLIRELAY_ADMIN_USER = "ops"
    settings.CLIRELAY_ADMIN_PASSWORD = ""
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    password = out.getvalue().split("(shown once): ")[1].split()[0]
    user = User.objects.get(username="ops")
    assert user.is_superuser and user.check_password(password)
    assert Team.objects.filter(slug="default").exists()

    again = io.StringIO()
    call_command("bootstrap", stdout=again)
    assert "password" not in again.getvalue()
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_bootstrap_uses_the_configured_password(settings) -> None:
    settings.CLIRELAY_ADMIN_USER = "admin"
    settings.CLIRELAY_ADMIN_PASSWORD = "s3cret-pass-word"
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    assert "s3cret-pass-word" not in out.getvalue()
    assert User.objects.get(username="admin").check_password("s3cret-pass-word")


@pytest.mark.django_db
def test_create_api_key_prints_the_key_once_and_stores_only_its_hash() -> None:
    team = Team.objects.create(name="Default", slug="default")
    out = io.StringIO()
    call_command("create_api_key", "laptop", "--models", "gpt-*, claude-*", stdout=out)
    raw = out.getvalue().strip()
    assert raw.startswith("sk-") and len(raw) == 35
    key = ApiKey.objects.get(team=team, name="laptop")
    assert key.key_hash == hash_key(raw)
    assert raw not in (key.key_prefix, key.key_suffix)
    assert key.masked == f"{raw[:5]}…{raw[-3:]}"
    assert key.allowed_models == ["gpt-*", "claude-*"]


@pytest.mark.django_db
def test_create_api_key_refuses_an_unknown_team_and_a_duplicate_name() -> None:
    Team.objects.create(name="Default", slug="default")
    with pytest.raises(CommandError, match="no team"):
        call_command("create_api_key", "x", "--team", "nope", stdout=io.StringIO())
    call_command("create_api_key", "x", stdout=io.StringIO())
    with pytest.raises(CommandError, match="already has"):
        call_command("create_api_key", "x", stdout=io.StringIO())
