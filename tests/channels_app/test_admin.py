"""The admin of channels and platform settings: team scoping and write-only secrets."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from accounts.models import ChannelGroup
from channels_app.models import Channel, ChannelKey, ModelPrice, ProxyEntry, RuntimeSettings
from gateway.encryption import mask
from tests.admin_pages import add_url, change_url, changelist_url, client_for, delete_url, is_hidden, page, viewer_of
from tests.conftest import Persona

SECRET = "sk-upstream-0123456789-very-secret"
PROXY = "http://user:hunter2@proxy.acme.test:8080"
EXTRA = "sk-extra-9876543210-also-secret"
PLAINTEXTS = (SECRET, PROXY, EXTRA, "hunter2")


@pytest.fixture
def acme_channel(alice: Persona) -> Channel:
    channel = Channel.objects.create(
        team=alice.team, kind="openai-compatibility", name="acme-channel", secret=SECRET, proxy_url=PROXY
    )
    ChannelKey.objects.create(channel=channel, secret=EXTRA)
    return channel


@pytest.fixture
def globex_channel(charlie: Persona) -> Channel:
    return Channel.objects.create(team=charlie.team, kind="claude-api-key", name="globex-channel", secret="sk-g-1")


def _channel_form(channel: Channel, **extra: Any) -> dict[str, Any]:
    """The change form as the browser posts it, every secret input left empty."""
    data: dict[str, Any] = {
        "team": channel.team_id,
        "kind": channel.kind,
        "name": channel.name,
        "notes": "",
        "enabled": "on",
        "base_url": "",
        "secret": "",
        "headers": "{}",
        "proxy": "",
        "proxy_url": "",
        "prefix": "",
        "served_models": "[]",
        "excluded_models": "[]",
        "priority": "0",
        "options": "{}",
        "extra_keys-TOTAL_FORMS": "0",
        "extra_keys-INITIAL_FORMS": "0",
        "extra_keys-MIN_NUM_FORMS": "0",
        "extra_keys-MAX_NUM_FORMS": "1000",
    }
    keys = list(channel.extra_keys.all())
    data["extra_keys-TOTAL_FORMS"] = data["extra_keys-INITIAL_FORMS"] = str(len(keys))
    for i, key in enumerate(keys):
        data.update({f"extra_keys-{i}-id": key.pk, f"extra_keys-{i}-channel": channel.pk})
        data.update({f"extra_keys-{i}-secret": "", f"extra_keys-{i}-proxy_url": "", f"extra_keys-{i}-enabled": "on"})
    data.update(extra)
    return data


def _assert_no_plaintext(html: str) -> None:
    for secret in PLAINTEXTS:
        assert secret not in html


def test_alice_lists_her_channels_and_not_globex(
    acme_channel: Channel, globex_channel: Channel, alice: Persona
) -> None:
    html = page(client_for(alice.user), changelist_url(Channel))

    assert "acme-channel" in html
    assert "globex-channel" not in html
    assert "Globex" not in html


def test_charlie_sees_nothing_of_alices_channels(acme_channel: Channel, charlie: Persona) -> None:
    client = client_for(charlie.user)

    assert "acme-channel" not in page(client, changelist_url(Channel))
    assert is_hidden(client, change_url(acme_channel))
    assert is_hidden(client, delete_url(acme_channel))


def test_a_shared_channel_stays_invisible_to_other_teams(acme_channel: Channel, charlie: Persona) -> None:
    Channel.objects.filter(pk=acme_channel.pk).update(shared=True)
    client = client_for(charlie.user)

    assert "acme-channel" not in page(client, changelist_url(Channel))
    assert is_hidden(client, change_url(acme_channel))


def test_only_a_superuser_shares_a_channel(acme_channel: Channel, alice: Persona, superuser: User) -> None:
    assert (
        client_for(alice.user).post(change_url(acme_channel), _channel_form(acme_channel, shared="on")).status_code
        == 302
    )
    assert Channel.objects.get(pk=acme_channel.pk).shared is False  # read-only for a team admin: the post is ignored

    assert (
        client_for(superuser).post(change_url(acme_channel), _channel_form(acme_channel, shared="on")).status_code
        == 302
    )
    assert Channel.objects.get(pk=acme_channel.pk).shared is True


def test_a_superuser_lists_every_channel(acme_channel: Channel, globex_channel: Channel, superuser: User) -> None:
    html = page(client_for(superuser), changelist_url(Channel))

    assert "acme-channel" in html and "globex-channel" in html


@pytest.mark.parametrize("who", ["alice", "superuser", "viewer"])
def test_channel_secrets_never_reach_a_page(acme_channel: Channel, alice: Persona, superuser: User, who: str) -> None:
    user = {"alice": alice.user, "superuser": superuser, "viewer": None}[who] or viewer_of(alice.team)
    client = client_for(user)

    listing = page(client, changelist_url(Channel))
    detail = page(client, change_url(acme_channel))

    _assert_no_plaintext(listing)
    _assert_no_plaintext(detail)
    assert mask(SECRET) in listing
    assert mask(SECRET) in detail and mask(PROXY) in detail and mask(EXTRA) in detail


def test_delete_and_history_pages_show_no_secret(acme_channel: Channel, superuser: User) -> None:
    client = client_for(superuser)
    client.post(change_url(acme_channel), _channel_form(acme_channel, notes="edited"))

    _assert_no_plaintext(page(client, delete_url(acme_channel)))
    _assert_no_plaintext(page(client, reverse("admin:channels_app_channel_history", args=[acme_channel.pk])))


def test_leaving_secret_inputs_empty_keeps_the_stored_values(acme_channel: Channel, alice: Persona) -> None:
    response = client_for(alice.user).post(change_url(acme_channel), _channel_form(acme_channel, notes="edited"))

    assert response.status_code == 302
    channel = Channel.objects.get(pk=acme_channel.pk)
    assert (channel.notes, channel.secret, channel.proxy_url) == ("edited", SECRET, PROXY)
    assert channel.extra_keys.get().secret == EXTRA


def test_typing_a_secret_replaces_the_stored_one(acme_channel: Channel, alice: Persona) -> None:
    data = _channel_form(acme_channel, secret="sk-new-secret-value-42", **{"extra_keys-0-secret": "sk-new-extra"})

    assert client_for(alice.user).post(change_url(acme_channel), data).status_code == 302

    channel = Channel.objects.get(pk=acme_channel.pk)
    assert (channel.secret, channel.proxy_url) == ("sk-new-secret-value-42", PROXY)
    assert channel.extra_keys.get().secret == "sk-new-extra"


def test_a_channel_cannot_join_another_teams_group(acme_channel: Channel, charlie: Persona, superuser: User) -> None:
    foreign = ChannelGroup.objects.create(team=charlie.team, name="g", slug="g")

    response = client_for(superuser).post(change_url(acme_channel), _channel_form(acme_channel, groups=[foreign.pk]))

    assert response.status_code == 200
    assert not acme_channel.groups.exists()


def test_the_channel_form_offers_only_the_admins_groups(
    acme_channel: Channel, alice: Persona, charlie: Persona
) -> None:
    ChannelGroup.objects.create(team=alice.team, name="acme-group", slug="acme-group")
    ChannelGroup.objects.create(team=charlie.team, name="globex-group", slug="globex-group")

    html = page(client_for(alice.user), change_url(acme_channel))

    assert "acme-group" in html and "globex-group" not in html


def test_a_viewer_cannot_change_a_channel(acme_channel: Channel, alice: Persona) -> None:
    client = client_for(viewer_of(alice.team))

    response = client.post(change_url(acme_channel), _channel_form(acme_channel, notes="viewer was here"))

    assert response.status_code == 403
    assert Channel.objects.get(pk=acme_channel.pk).notes == ""


@pytest.mark.parametrize("model", [ProxyEntry, ModelPrice, RuntimeSettings])
def test_platform_objects_are_for_superusers_only(db: None, alice: Persona, superuser: User, model: Any) -> None:
    assert client_for(alice.user).get(changelist_url(model)).status_code == 403
    assert client_for(superuser).get(changelist_url(model), follow=True).status_code == 200


def test_proxy_urls_are_write_only(db: None, superuser: User) -> None:
    entry = ProxyEntry.objects.create(name="pool-1", url=PROXY)
    client = client_for(superuser)

    _assert_no_plaintext(page(client, changelist_url(ProxyEntry)))
    _assert_no_plaintext(page(client, change_url(entry)))
    data = {"name": "pool-1", "url": "", "enabled": "on", "description": "edited"}
    assert client.post(change_url(entry), data).status_code == 302
    assert ProxyEntry.objects.get(pk=entry.pk).url == PROXY


def test_runtime_settings_are_a_singleton_with_a_write_only_proxy(db: None, superuser: User) -> None:
    settings = RuntimeSettings.objects.create(proxy_url=PROXY)
    client = client_for(superuser)

    assert client.get(changelist_url(RuntimeSettings)).url == change_url(settings)
    assert client.get(add_url(RuntimeSettings)).status_code == 403
    assert client.get(delete_url(settings)).status_code == 403
    _assert_no_plaintext(page(client, change_url(settings)))
