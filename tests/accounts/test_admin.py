"""The admin of teams, routing groups, path routes and API keys: team scoping and shown-once keys."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.urls import reverse

from accounts.keys import hash_key
from accounts.models import ApiKey, ChannelGroup, PathRoute, Team
from channels_app.models import Channel
from tests.admin_pages import (
    FULL_KEY,
    add_url,
    change_url,
    changelist_url,
    client_for,
    is_hidden,
    page,
    viewer_of,
)
from tests.conftest import Persona


@pytest.fixture
def objects(alice: Persona, charlie: Persona) -> dict[str, Any]:
    """One routing group, path route and channel per team, named after the team."""
    made: dict[str, Any] = {}
    for persona, label in ((alice, "acme"), (charlie, "globex")):
        group = ChannelGroup.objects.create(team=persona.team, name=f"{label}-group", slug=f"{label}-slug")
        made[f"{label}_group"] = group
        made[f"{label}_route"] = PathRoute.objects.create(team=persona.team, path=f"/{label}-path", group=group)
        made[f"{label}_channel"] = Channel.objects.create(
            team=persona.team, kind="openai-compatibility", name=f"{label}-channel"
        )
        made[f"{label}_key"] = persona.key
    return made


def _key_form(team: Team, name: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "team": team.pk,
        "name": name,
        "notes": "",
        "enabled": "on",
        "expires_at_0": "",
        "expires_at_1": "",
        "allowed_models": "[]",
        "daily_request_limit": "0",
        "total_request_limit": "0",
        "token_quota": "0",
        "spending_limit_usd": "0",
        "rpm_limit": "0",
        "tpm_limit": "0",
        "concurrency_limit": "0",
        "system_prompt": "",
    }
    data.update(extra)
    return data


SCOPED = [(ApiKey, "key", "name"), (ChannelGroup, "group", "name"), (PathRoute, "route", "path")]


@pytest.mark.parametrize(("model", "kind", "attr"), SCOPED)
def test_a_team_admin_lists_only_her_teams_objects(
    objects: dict[str, Any], alice: Persona, model: type[Any], kind: str, attr: str
) -> None:
    html = page(client_for(alice.user), changelist_url(model))

    assert getattr(objects[f"acme_{kind}"], attr) in html
    assert getattr(objects[f"globex_{kind}"], attr) not in html
    assert "Globex" not in html


@pytest.mark.parametrize(("model", "kind", "attr"), SCOPED)
def test_charlie_sees_nothing_of_alices(
    objects: dict[str, Any], charlie: Persona, model: type[Any], kind: str, attr: str
) -> None:
    client = client_for(charlie.user)

    assert getattr(objects[f"acme_{kind}"], attr) not in page(client, changelist_url(model))
    assert is_hidden(client, change_url(objects[f"acme_{kind}"]))


@pytest.mark.parametrize(("model", "kind", "attr"), SCOPED)
def test_a_superuser_lists_every_teams_objects(
    objects: dict[str, Any], superuser: User, model: type[Any], kind: str, attr: str
) -> None:
    html = page(client_for(superuser), changelist_url(model))

    assert getattr(objects[f"acme_{kind}"], attr) in html
    assert getattr(objects[f"globex_{kind}"], attr) in html


def test_adding_a_key_shows_the_plaintext_once_and_stores_only_its_hash(alice: Persona) -> None:
    client = client_for(alice.user)

    response = client.post(add_url(ApiKey), _key_form(alice.team, "ci"), follow=True)

    shown = FULL_KEY.findall(response.content.decode())
    assert len(shown) == 1
    key = ApiKey.objects.get(team=alice.team, name="ci")
    assert key.key_hash == hash_key(shown[0])
    assert all(shown[0] not in str(value) for value in ApiKey.objects.filter(pk=key.pk).values().get().values())
    assert shown[0] not in page(client, change_url(key))
    assert key.masked in page(client, changelist_url(ApiKey))


def test_the_rotate_action_issues_a_new_key_on_the_same_row(alice: Persona) -> None:
    old_hash = alice.key.key_hash
    data = {"action": "rotate_keys", "_selected_action": [alice.key.pk]}

    response = client_for(alice.user).post(changelist_url(ApiKey), data, follow=True)

    shown = FULL_KEY.findall(response.content.decode())
    assert len(shown) == 1
    alice.key.refresh_from_db()
    assert alice.key.key_hash == hash_key(shown[0]) != old_hash
    assert ApiKey.objects.filter(team=alice.team).count() == 1


def test_the_rotate_button_issues_a_new_key_and_shows_it_once(alice: Persona) -> None:
    client = client_for(alice.user)
    url = reverse("admin:accounts_apikey_rotate", args=[alice.key.pk])
    assert "Rotate key" in page(client, change_url(alice.key))

    response = client.post(url, follow=True)

    shown = FULL_KEY.findall(response.content.decode())
    assert len(shown) == 1
    alice.key.refresh_from_db()
    assert alice.key.key_hash == hash_key(shown[0])
    assert client.get(url).status_code == 405


def test_charlie_cannot_rotate_alices_key(alice: Persona, charlie: Persona) -> None:
    client = client_for(charlie.user)
    old_hash = alice.key.key_hash

    assert client.post(reverse("admin:accounts_apikey_rotate", args=[alice.key.pk])).status_code == 404
    client.post(changelist_url(ApiKey), {"action": "rotate_keys", "_selected_action": [alice.key.pk]})

    alice.key.refresh_from_db()
    assert alice.key.key_hash == old_hash


def test_the_key_form_offers_only_the_admins_teams_groups_and_channels(objects: dict[str, Any], alice: Persona) -> None:
    html = page(client_for(alice.user), add_url(ApiKey))

    assert "acme-group" in html and "acme-channel" in html
    assert "globex-group" not in html and "globex-channel" not in html
    assert "Globex" not in html


def test_a_team_admin_cannot_assign_another_team(objects: dict[str, Any], alice: Persona, charlie: Persona) -> None:
    response = client_for(alice.user).post(add_url(ApiKey), _key_form(charlie.team, "sneaky"))

    assert response.status_code == 200  # the form comes back with an error
    assert not ApiKey.objects.filter(name="sneaky").exists()


def test_a_key_cannot_be_allowed_another_teams_group(objects: dict[str, Any], superuser: User, alice: Persona) -> None:
    data = _key_form(alice.team, "mixed", allowed_channel_groups=[objects["globex_group"].pk])

    response = client_for(superuser).post(add_url(ApiKey), data)

    assert response.status_code == 200
    assert "Choose only objects of team Acme" in response.content.decode()
    assert not ApiKey.objects.filter(name="mixed").exists()


def test_a_path_route_cannot_point_at_another_teams_group(objects: dict[str, Any], superuser: User) -> None:
    data = {"team": objects["acme_group"].team_id, "path": "/x", "group": objects["globex_group"].pk}

    response = client_for(superuser).post(add_url(PathRoute), {**data, "fallback": "none"})

    assert response.status_code == 200
    assert not PathRoute.objects.filter(path="/x").exists()


def test_a_viewer_reads_but_cannot_change(objects: dict[str, Any], alice: Persona) -> None:
    client = client_for(viewer_of(alice.team))
    group = objects["acme_group"]

    assert "acme-group" in page(client, changelist_url(ChannelGroup))
    assert "acme-group" in page(client, change_url(group))
    response = client.post(change_url(group), {"team": group.team_id, "name": "renamed", "slug": "renamed"})
    assert response.status_code == 403
    assert client.get(add_url(ChannelGroup)).status_code == 403
    group.refresh_from_db()
    assert group.name == "acme-group"


def test_a_viewer_cannot_rotate_a_key(alice: Persona) -> None:
    client = client_for(viewer_of(alice.team))
    old_hash = alice.key.key_hash

    assert "Rotate key" not in page(client, change_url(alice.key))
    assert client.post(reverse("admin:accounts_apikey_rotate", args=[alice.key.pk])).status_code == 403
    client.post(changelist_url(ApiKey), {"action": "rotate_keys", "_selected_action": [alice.key.pk]})

    alice.key.refresh_from_db()
    assert alice.key.key_hash == old_hash


def test_a_team_admin_may_view_her_team_but_not_change_or_add_teams(alice: Persona, charlie: Persona) -> None:
    client = client_for(alice.user)

    assert "alice" in page(client, change_url(alice.team))  # the members inline
    assert is_hidden(client, change_url(charlie.team))
    assert client.get(add_url(Team)).status_code == 403
    assert client.post(change_url(alice.team), {"name": "Renamed", "slug": "renamed"}).status_code == 403


def test_a_staff_user_without_a_team_sees_nothing_and_gets_no_error(db: None, alice: Persona) -> None:
    loner = User.objects.create_user("loner", "loner@example.test", "pw", is_staff=True)
    client = client_for(loner)

    assert "API keys" not in page(client, reverse("admin:index"))
    assert client.get(changelist_url(ApiKey)).status_code == 403
    assert client.get(change_url(alice.key)).status_code in (302, 403)


def test_a_single_team_admin_gets_her_team_preselected(alice: Persona) -> None:
    html = page(client_for(alice.user), add_url(ChannelGroup))

    assert f'<option value="{alice.team.pk}" selected>Acme</option>' in html


@pytest.mark.parametrize("who", ["superuser", "alice", "viewer"])
def test_every_admin_page_of_ours_renders_or_refuses_without_error(
    objects: dict[str, Any], superuser: User, alice: Persona, who: str
) -> None:
    user = {"superuser": superuser, "alice": alice.user, "viewer": None}[who] or viewer_of(alice.team)
    client = client_for(user)
    ours = [m for m in admin.site._registry if m._meta.app_label in ("accounts", "channels_app", "usage")]

    assert client.get(reverse("admin:index")).status_code == 200
    for model in ours:
        for url in (changelist_url(model), add_url(model)):
            assert client.get(url, follow=True).status_code in (200, 403), url
