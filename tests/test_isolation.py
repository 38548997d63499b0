"""Tenant isolation on every admin page, admin endpoint, live feed and API of ours.

alice and bob administer team Acme, charlie team Globex. Every page a staff user can reach is
tried as charlie against Acme's objects (changelists with search and filters, add forms, change,
delete, history, custom URLs, actions, autocomplete, raw-id popups), and every page he may open
is searched for strings only Acme's objects carry. The admins are enumerated from
``admin.site._registry``: a new ModelAdmin of our apps is covered when it is registered, and
``test_every_team_scoped_model_has_objects_in_both_teams`` fails until ``_build_team`` makes one
of its objects per team.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import zstandard
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib import admin
from django.contrib.admin import ModelAdmin
from django.contrib.auth.models import User
from django.db import models
from django.test import Client, RequestFactory
from django.urls import URLPattern, reverse
from django.utils import timezone

from accounts.admin_scoping import SuperuserOnlyAdmin, TeamFilter, TeamScopedAdmin
from accounts.models import ApiKey, ChannelGroup, PathRoute, Team, TeamMembership
from channels_app.models import Channel, ChannelKey, ModelPrice, ProxyEntry, RuntimeSettings
from gateway.asgi import application
from gateway.encryption import mask
from tests.admin_pages import add_url, change_url, changelist_url, client_for, delete_url, page, viewer_of
from tests.conftest import Persona
from usage.models import LogStorageSettings, RequestBody, RequestLog

OUR_APPS = ("accounts", "channels_app", "usage", "oauth_flows")
OURS: list[tuple[type[models.Model], ModelAdmin]] = sorted(
    ((model, model_admin) for model, model_admin in admin.site._registry.items() if model._meta.app_label in OUR_APPS),
    key=lambda pair: pair[0]._meta.label,
)
SCOPED = [model for model, model_admin in OURS if isinstance(model_admin, TeamScopedAdmin)]
PLATFORM = [model for model, model_admin in OURS if isinstance(model_admin, SuperuserOnlyAdmin)]
STANDARD_URLS = ("changelist", "add", "history", "delete", "change")
HIDDEN = (302, 403, 404, 405)


def _label(model: type[models.Model]) -> str:
    return model._meta.label


def _admin_of(model: type[models.Model]) -> ModelAdmin:
    return admin.site._registry[model]


def _relations() -> list[tuple[type[models.Model], str]]:
    """(model, field) of every FK / M2M of our admins whose target has an admin: autocomplete sources."""
    found = []
    for model, _ in OURS:
        for model_field in model._meta.get_fields():
            forward = model_field.is_relation and model_field.concrete and not model_field.auto_created
            if forward and model_field.related_model in admin.site._registry:
                found.append((model, model_field.name))
    return found


RELATIONS = _relations()


# --- the world: one set of objects per team ------------------------------------------------


@dataclass
class TeamObjects:
    """A team's objects, one per scoped model, and the strings only this team's pages may show."""

    team: Team
    objects: dict[type[models.Model], models.Model]
    shown: dict[type[models.Model], str]  # what a changelist row of the object displays
    markers: list[str] = field(default_factory=list)


def _build_team(team: Team, tag: str, persona: Persona) -> TeamObjects:
    """Every team-owned kind of object, each carrying ``{tag}-mark`` in what it displays."""
    mark = f"{tag}-mark"
    group = ChannelGroup.objects.create(
        team=team, name=f"{mark}-group", slug=f"{mark}-group", description=f"{mark} group description"
    )
    route = PathRoute.objects.create(team=team, path=f"/{mark}-route", group=group)
    channel = Channel.objects.create(
        team=team,
        kind="openai-compatibility",
        name=f"{mark}-channel",
        notes=f"{mark} notes",
        base_url="http://127.0.0.1:9/v1",  # discard port: nothing ever answers
        secret=f"sk-{mark}-upstream-0123456789",
        headers={"X-Tenant-Token": f"{mark}-header-secret"},
        options={"websockets": True, "note": f"{mark}-option-secret"},
        prefix=f"{tag}pfx",
        served_models=[{"name": f"{mark}-upstream-model", "alias": f"{mark}-model"}],
    )
    channel.groups.add(group)
    ChannelKey.objects.create(channel=channel, secret=f"sk-{mark}-extra-9876543210")
    key = ApiKey(team=team, name=f"{mark}-key", notes=f"{mark} notes")
    key.issue_key()
    key.save()
    key.allowed_channel_groups.add(group)
    key.allowed_channels.add(channel)
    log = RequestLog.objects.create(
        time=timezone.now() - dt.timedelta(seconds=20),
        team=team,
        api_key=key,
        key_display=key.masked,
        group=group,
        channel=channel,
        channel_name=channel.name,
        client_dialect="openai-chat",
        path="/v1/chat/completions",
        requested_model=f"{mark}-model",
        upstream_model=f"{mark}-upstream-model",
        status_code=200,
        total_tokens=7,
    )
    compress = zstandard.ZstdCompressor().compress
    request, response = compress(f'{{"model":"{mark}-body"}}'.encode()), compress(b"{}")
    RequestBody.objects.create(log=log, request=request, response=response, size=len(request) + len(response))
    objects: dict[type[models.Model], models.Model] = {
        Team: team,
        ChannelGroup: group,
        PathRoute: route,
        Channel: channel,
        ApiKey: key,
        RequestLog: log,
    }
    shown: dict[type[models.Model], str] = {
        Team: team.name,
        ChannelGroup: group.name,
        PathRoute: route.path,
        Channel: channel.name,
        ApiKey: key.name,
        RequestLog: log.requested_model,
    }
    markers = [mark, team.name, persona.user.username, persona.key.masked, persona.raw_key, key.masked]
    return TeamObjects(team=team, objects=objects, shown=shown, markers=markers)


@dataclass
class World:
    acme: TeamObjects
    globex: TeamObjects
    platform: dict[type[models.Model], models.Model]


@pytest.fixture
def world(alice: Persona, charlie: Persona) -> World:
    platform: dict[type[models.Model], models.Model] = {
        ProxyEntry: ProxyEntry.objects.create(name="platform-proxy", url="http://u:p@proxy.test:8080"),
        ModelPrice: ModelPrice.objects.create(model="platform-model-*"),
        RuntimeSettings: RuntimeSettings.objects.create(),
        LogStorageSettings: LogStorageSettings.objects.create(),
    }
    return World(
        acme=_build_team(alice.team, "acme", alice),
        globex=_build_team(charlie.team, "globex", charlie),
        platform=platform,
    )


@pytest.fixture(params=["one-team", "two-teams"])
def outsider(request: pytest.FixtureRequest, charlie: Persona) -> User:
    """charlie, alone in Globex or also a viewer of a third team (so the team filter is shown)."""
    if request.param == "two-teams":
        initech = Team.objects.create(name="Initech", slug="initech")
        ChannelGroup.objects.create(team=initech, name="initech-group", slug="initech-group")
        TeamMembership.objects.create(user=charlie.user, team=initech, role=TeamMembership.Role.VIEWER)
    return charlie.user


# --- helpers --------------------------------------------------------------------------------


def assert_no_leak(text: str, markers: list[str], where: str) -> None:
    leaked = [marker for marker in markers if marker in text]
    assert not leaked, f"{where} shows {leaked}"


def _row(obj: models.Model) -> dict[str, Any]:
    """The stored values of ``obj`` (raises when it was deleted)."""
    return type(obj)._default_manager.filter(pk=obj.pk).values().get()


def _custom_urls(model: type[models.Model]) -> list[URLPattern]:
    """The admin URLs of ``model`` beyond Django's own (buttons, extra views)."""
    prefix = f"{model._meta.app_label}_{model._meta.model_name}_"
    return [
        pattern
        for pattern in _admin_of(model).get_urls()
        if isinstance(pattern, URLPattern)
        and pattern.name
        and pattern.name.removeprefix(prefix) not in STANDARD_URLS
        and model._meta.app_label in OUR_APPS
    ]


def _custom_object_urls(obj: models.Model) -> list[str]:
    """The custom admin URLs of ``obj``'s model, about ``obj`` when they take an object id."""
    urls = []
    for pattern in _custom_urls(type(obj)):
        args = [obj.pk] if "object_id" in pattern.pattern.converters else []
        urls.append(reverse(f"admin:{pattern.name}", args=args))
    return urls


def _object_urls(obj: models.Model) -> list[str]:
    """Every admin URL about one object: change, delete, history and the custom ones."""
    opts = obj._meta
    history = reverse(f"admin:{opts.app_label}_{opts.model_name}_history", args=[obj.pk])
    return [change_url(obj), delete_url(obj), history, *_custom_object_urls(obj)]


def _action_names(model: type[models.Model], superuser: User) -> list[str]:
    request = RequestFactory().get(changelist_url(model))
    request.user = superuser
    return list(_admin_of(model).get_actions(request))


def _search_url(model: type[models.Model], target: TeamObjects) -> str:
    """A search that matches ``target``'s object, for a term the page echoes without it being a marker."""
    return f"{changelist_url(model)}?q={target.shown[model][2:]}"


def _changelist_variants(model: type[models.Model], target: TeamObjects) -> list[str]:
    """The changelist as it is searched, filtered and opened as a raw-id popup."""
    base = changelist_url(model)
    return [
        base,
        _search_url(model, target),
        f"{base}?team={target.team.pk}",
        f"{base}?_popup=1&_to_field=id",
        f"{base}?all=",
    ]


def _add_url_prefilled(model: type[models.Model], target: TeamObjects) -> str:
    """The add page with every relation preset (``?group=<id>``) to ``target``'s objects, as links can."""
    params = []
    for model_field in model._meta.get_fields():
        related = target.objects.get(model_field.related_model) if model_field.is_relation else None
        if related is not None and model_field.concrete and not model_field.auto_created:
            params.append(f"{model_field.name}={related.pk}")
    return f"{add_url(model)}?{'&'.join(params)}"


def _get_followed(client: Client, url: str) -> tuple[int, str]:
    response = client.get(url, follow=True)
    return response.status_code, response.content.decode()


# --- coverage: nothing of ours escapes the matrix -------------------------------------------


def test_every_admin_of_ours_is_team_scoped_or_superuser_only() -> None:
    loose = [_label(model) for model, _ in OURS if model not in SCOPED and model not in PLATFORM]

    assert not loose, f"ModelAdmins without team scoping: {loose}"
    assert SCOPED and PLATFORM


def test_every_team_scoped_model_has_objects_in_both_teams(world: World) -> None:
    missing = [_label(model) for model in SCOPED if model not in world.acme.objects]

    assert not missing, f"add an object of {missing} to _build_team"
    assert all(model in world.platform for model in PLATFORM)


def test_every_add_form_of_a_team_admin_is_tried_with_foreign_objects(world: World, alice: Persona) -> None:
    client = client_for(alice.user)
    addable = [_label(model) for model in SCOPED if client.get(add_url(model)).status_code == 200]

    assert sorted(addable) == sorted(_label(model) for model in ADD_FORMS)


# --- charlie against alice's objects --------------------------------------------------------


@pytest.mark.parametrize("model", SCOPED, ids=_label)
def test_an_outsider_lists_searches_and_filters_nothing_of_alices_team(
    world: World, outsider: User, alice: Persona, model: type[models.Model]
) -> None:
    client = client_for(outsider)

    for url in _changelist_variants(model, world.acme):
        status, html = _get_followed(client, url)
        assert status == 200, url
        assert_no_leak(html, world.acme.markers, url)
    for url in (changelist_url(model), _search_url(model, world.acme)):  # the control: alice finds it there
        assert world.acme.shown[model] in page(client_for(alice.user), url), url


@pytest.mark.parametrize("model", [m for m in SCOPED if TeamFilter in _admin_of(m).list_filter], ids=_label)
def test_the_team_filter_names_only_the_watchers_teams(
    world: World, charlie: Persona, superuser: User, model: type[models.Model]
) -> None:
    initech = Team.objects.create(name="Initech", slug="initech")
    TeamMembership.objects.create(user=charlie.user, team=initech, role=TeamMembership.Role.VIEWER)

    html = page(client_for(charlie.user), changelist_url(model))
    assert "Initech" in html and "Globex" in html and "Acme" not in html
    html = page(client_for(superuser), changelist_url(model))
    assert "Initech" in html and "Globex" in html and "Acme" in html


@pytest.mark.parametrize("model", SCOPED, ids=_label)
def test_an_outsider_cannot_open_any_page_of_alices_objects(
    world: World, outsider: User, model: type[models.Model]
) -> None:
    client = client_for(outsider)
    target = world.acme.objects[model]

    for url in _object_urls(target):
        response = client.get(url)
        assert response.status_code in HIDDEN, (url, response.status_code)
        assert_no_leak(_get_followed(client, url)[1], world.acme.markers, url)


@pytest.mark.parametrize("model", SCOPED, ids=_label)
def test_an_outsider_cannot_change_or_delete_alices_objects_through_any_url(
    world: World, outsider: User, model: type[models.Model]
) -> None:
    client = client_for(outsider)
    target = world.acme.objects[model]
    before = _row(target)

    for url in _object_urls(target):
        response = client.post(url, {"post": "yes", "name": "taken-over", "team": world.globex.team.pk})
        assert response.status_code in HIDDEN, (url, response.status_code)
        assert_no_leak(response.content.decode(), world.acme.markers, url)

    assert _row(target) == before


@pytest.mark.parametrize("model", SCOPED, ids=_label)
def test_no_action_of_an_outsider_touches_alices_objects(
    world: World, outsider: User, superuser: User, model: type[models.Model]
) -> None:
    client = client_for(outsider)
    target = world.acme.objects[model]
    before = _row(target)
    actions = _action_names(model, superuser)

    for action in actions:
        data = {"action": action, "_selected_action": [target.pk], "post": "yes", "index": "0"}
        response = client.post(changelist_url(model), data, follow=True)
        assert_no_leak(response.content.decode(), world.acme.markers, f"action {action}")
        assert _row(target) == before, action


@pytest.mark.parametrize("model", SCOPED, ids=_label)
def test_an_outsiders_own_pages_offer_nothing_of_alices_team(
    world: World, outsider: User, model: type[models.Model]
) -> None:
    """Add forms (FK / M2M choices) and his own objects' change, delete and history pages."""
    client = client_for(outsider)
    own = world.globex.objects[model]

    for url in (add_url(model), _add_url_prefilled(model, world.acme)):
        status, html = _get_followed(client, url)
        assert status in (200, 403), url
        assert_no_leak(html, world.acme.markers, url)
    for url in _object_urls(own):
        status, html = _get_followed(client, url)
        assert status in (200, 403, 405), url
        assert_no_leak(html, world.acme.markers, url)
    assert world.globex.shown[model] in page(client, change_url(own))


def test_an_outsiders_index_and_app_pages_show_nothing_of_alices_team(
    world: World, outsider: User, alice: Persona
) -> None:
    # alice's rotation lands in the admin log, which the index's "recent actions" reads.
    client_for(alice.user).post(reverse("admin:accounts_apikey_rotate", args=[world.acme.objects[ApiKey].pk]))
    client = client_for(outsider)

    urls = [reverse("admin:index")] + [
        reverse("admin:app_list", args=[app]) for app in ("accounts", "channels_app", "usage")
    ]
    for url in urls:
        status, html = _get_followed(client, url)
        assert status in (200, 404), url
        assert_no_leak(html, world.acme.markers, url)


@pytest.mark.parametrize(("model", "field_name"), RELATIONS, ids=lambda v: v if isinstance(v, str) else _label(v))
def test_autocomplete_offers_an_outsider_nothing_of_alices_team(
    world: World, outsider: User, alice: Persona, model: type[models.Model], field_name: str
) -> None:
    target_model = model._meta.get_field(field_name).related_model
    foreign_ids = {str(obj.pk) for kind, obj in world.acme.objects.items() if kind is target_model}

    def results(user: User, term: str) -> tuple[int, list[dict[str, str]], str]:
        params = {
            "app_label": model._meta.app_label,
            "model_name": model._meta.model_name,
            "field_name": field_name,
            "term": term,
        }
        response = client_for(user).get(reverse("admin:autocomplete"), params)
        if response.status_code != 200:
            return response.status_code, [], response.content.decode()
        data = response.json()
        return 200, data["results"], json.dumps(data, ensure_ascii=False)

    for term in ("", "acme", "Acme"):
        status, found, text = results(outsider, term)
        assert status in (200, 403)
        assert not foreign_ids & {item["id"] for item in found}, term
        assert_no_leak(text, world.acme.markers, f"autocomplete {term!r}")
    status, found, _ = results(alice.user, "")
    if status == 200 and target_model in SCOPED:  # the control: the endpoint does list alice's own
        assert foreign_ids <= {item["id"] for item in found}


# --- what the team sees: superuser, bob, a viewer, a member of two teams ----------------------


@pytest.mark.parametrize("model", SCOPED, ids=_label)
def test_a_superuser_lists_and_opens_both_teams_objects(
    world: World, superuser: User, model: type[models.Model]
) -> None:
    client = client_for(superuser)

    listing = page(client, changelist_url(model))
    for side in (world.acme, world.globex):
        assert side.shown[model] in listing
        assert side.shown[model] in page(client, change_url(side.objects[model]))


@pytest.mark.parametrize("model", SCOPED, ids=_label)
def test_bob_sees_and_changes_his_teams_objects_as_alice_does(
    world: World, alice: Persona, bob: Persona, model: type[models.Model]
) -> None:
    target = world.acme.objects[model]
    pages = {}
    for persona in (alice, bob):
        client = client_for(persona.user)
        assert world.acme.shown[model] in page(client, changelist_url(model))
        pages[persona.user.username] = page(client, change_url(target))
        assert_no_leak(pages[persona.user.username], world.globex.markers, f"{persona.user.username}'s page")

    assert ('name="_save"' in pages["alice"]) == ('name="_save"' in pages["bob"])


@pytest.mark.parametrize("model", SCOPED, ids=_label)
def test_a_viewer_reads_her_teams_objects_and_changes_nothing(
    world: World, superuser: User, model: type[models.Model]
) -> None:
    client = client_for(viewer_of(world.acme.team))
    target = world.acme.objects[model]
    before = _row(target)

    assert world.acme.shown[model] in page(client, changelist_url(model))
    detail = page(client, change_url(target))
    assert world.acme.shown[model] in detail and 'name="_save"' not in detail
    assert_no_leak(detail, world.globex.markers, "a viewer's page")
    assert client.get(add_url(model)).status_code == 403
    for url in (change_url(target), *_custom_object_urls(target)):
        assert client.post(url, {"name": "viewer-was-here", "team": world.acme.team.pk}).status_code in (403, 405)
    assert client.post(delete_url(target), {"post": "yes"}).status_code == 403
    for action in _action_names(model, superuser):
        client.post(changelist_url(model), {"action": action, "_selected_action": [target.pk], "post": "yes"})
    assert _row(target) == before


@pytest.mark.parametrize("model", SCOPED, ids=_label)
def test_a_member_of_two_teams_runs_no_action_where_he_only_views(
    world: World, charlie: Persona, superuser: User, model: type[models.Model]
) -> None:
    """charlie, admin of Globex and viewer of Acme, selects a row of each: Acme's stays as it was."""
    TeamMembership.objects.create(user=charlie.user, team=world.acme.team, role=TeamMembership.Role.VIEWER)
    client = client_for(charlie.user)
    target = world.acme.objects[model]
    before = _row(target)
    selected = [target.pk, world.globex.objects[model].pk]

    assert world.acme.shown[model] in page(client, changelist_url(model))  # he may read Acme now
    for action in _action_names(model, superuser):
        client.post(changelist_url(model), {"action": action, "_selected_action": selected, "post": "yes"})
        assert _row(target) == before, action


# --- add forms: nothing may be created in, or linked to, alice's team -------------------------


def _group_form(team: Team, name: str, linked: TeamObjects) -> dict[str, Any]:
    blank = {"description": "", "priority": "0", "match_prefixes": "[]", "match_channels": "[]"}
    return {"team": team.pk, "name": name, "slug": name, **blank}


def _route_form(team: Team, name: str, linked: TeamObjects) -> dict[str, Any]:
    group = linked.objects[ChannelGroup]
    return {"team": team.pk, "path": f"/{name}", "group": group.pk, "strip_prefix": "on", "fallback": "none"}


def _key_form(team: Team, name: str, linked: TeamObjects) -> dict[str, Any]:
    limits = ("daily_request_limit", "total_request_limit", "token_quota", "spending_limit_usd")
    limits += ("rpm_limit", "tpm_limit", "concurrency_limit")
    return {
        "team": team.pk,
        "name": name,
        "notes": "",
        "enabled": "on",
        "expires_at_0": "",
        "expires_at_1": "",
        "allowed_models": "[]",
        "allowed_channel_groups": [linked.objects[ChannelGroup].pk],
        "allowed_channels": [linked.objects[Channel].pk],
        "system_prompt": "",
        **dict.fromkeys(limits, "0"),
    }


def _channel_form(team: Team, name: str, linked: TeamObjects) -> dict[str, Any]:
    return {
        "team": team.pk,
        "kind": "openai-compatibility",
        "name": name,
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
        "groups": [linked.objects[ChannelGroup].pk],
        "extra_keys-TOTAL_FORMS": "0",
        "extra_keys-INITIAL_FORMS": "0",
        "extra_keys-MIN_NUM_FORMS": "0",
        "extra_keys-MAX_NUM_FORMS": "1000",
    }


@dataclass(frozen=True)
class AddForm:
    build: Callable[[Team, str, TeamObjects], dict[str, Any]]
    lookup: str  # the field the new object's name lands in
    links: bool  # whether the form links other team-owned objects


ADD_FORMS: dict[type[models.Model], AddForm] = {
    ChannelGroup: AddForm(_group_form, "name", links=False),
    PathRoute: AddForm(_route_form, "path", links=True),
    ApiKey: AddForm(_key_form, "name", links=True),
    Channel: AddForm(_channel_form, "name", links=True),
}


def _exists(model: type[models.Model], form: AddForm, name: str) -> bool:
    value = f"/{name}" if form.lookup == "path" else name
    return model._default_manager.filter(**{form.lookup: value}).exists()


@pytest.mark.parametrize("model", list(ADD_FORMS), ids=_label)
def test_an_outsider_cannot_add_into_alices_team_or_link_her_objects(
    world: World, outsider: User, model: type[models.Model]
) -> None:
    client = client_for(outsider)
    form = ADD_FORMS[model]
    tries = [("into-acme", world.acme.team, world.acme)]
    if form.links:
        tries.append(("linked-to-acme", world.globex.team, world.acme))

    for name, team, linked in tries:
        response = client.post(add_url(model), form.build(team, name, linked))
        assert response.status_code in (200, 403), name  # the form again, with its errors
        assert not _exists(model, form, name), name
    # The control: the same form with his own team and objects is accepted.
    response = client.post(add_url(model), form.build(world.globex.team, "own", world.globex))
    assert response.status_code == 302 and _exists(model, form, "own")


def test_an_outsider_cannot_reach_alices_extra_keys_through_his_channels_inline(world: World, outsider: User) -> None:
    own, foreign_key = world.globex.objects[Channel], ChannelKey.objects.get(channel=world.acme.objects[Channel])
    data = _channel_form(world.globex.team, world.globex.shown[Channel], world.globex) | {
        "extra_keys-TOTAL_FORMS": "1",
        "extra_keys-INITIAL_FORMS": "1",
        "extra_keys-0-id": foreign_key.pk,
        "extra_keys-0-channel": own.pk,
        "extra_keys-0-secret": "sk-hijacked-secret",
        "extra_keys-0-proxy_url": "",
        "extra_keys-0-enabled": "on",
        "extra_keys-0-DELETE": "on",
    }

    client_for(outsider).post(change_url(own), data)

    foreign_key.refresh_from_db()
    assert foreign_key.channel_id == world.acme.objects[Channel].pk
    assert foreign_key.secret == "sk-acme-mark-extra-9876543210"


# --- platform objects, Django's own admins ---------------------------------------------------


@pytest.mark.parametrize("model", PLATFORM, ids=_label)
def test_platform_objects_are_closed_to_every_team_member(
    world: World, alice: Persona, charlie: Persona, superuser: User, model: type[models.Model]
) -> None:
    obj = world.platform[model]
    urls = [changelist_url(model), add_url(model), *_object_urls(obj)]

    for user in (alice.user, charlie.user, viewer_of(world.acme.team)):
        client = client_for(user)
        for url in urls:
            assert client.get(url).status_code in (403, 302), (user, url)
            assert client.post(url, {"post": "yes"}).status_code in (403, 302), (user, url)
    assert client_for(superuser).get(changelist_url(model), follow=True).status_code == 200
    assert _row(obj)


@pytest.mark.parametrize("model_name", ["user", "group"])
def test_team_admins_cannot_reach_djangos_user_and_group_admin(
    world: World, alice: Persona, charlie: Persona, model_name: str
) -> None:
    for persona in (alice, charlie):
        client = client_for(persona.user)
        assert client.get(reverse(f"admin:auth_{model_name}_changelist")).status_code == 403
    user_page = reverse("admin:auth_user_change", args=[alice.user.pk])
    assert client_for(charlie.user).get(user_page).status_code in HIDDEN


# --- secrets for viewers ---------------------------------------------------------------------


@pytest.mark.parametrize("who", ["viewer", "admin"])
def test_a_viewer_sees_channel_header_and_option_values_masked(world: World, alice: Persona, who: str) -> None:
    user = viewer_of(world.acme.team) if who == "viewer" else alice.user
    channel = world.acme.objects[Channel]
    assert isinstance(channel, Channel)

    detail = page(client_for(user), change_url(channel))

    assert "X-Tenant-Token" in detail  # header names are not secret
    if who == "viewer":
        assert "acme-mark-header-secret" not in detail and "acme-mark-option-secret" not in detail
        assert mask("acme-mark-header-secret") in detail and mask("acme-mark-option-secret") in detail
    else:  # the admin edits the JSON, so she sees it whole
        assert "acme-mark-header-secret" in detail


# --- the live feed and the client API ------------------------------------------------------


def _session_cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def _traffic(alice: Persona, charlie: Persona) -> dict[str, User]:
    for team, status, tokens in ((alice.team, 200, 30), (alice.team, 502, 0), (charlie.team, 200, 1000)):
        RequestLog.objects.create(
            time=timezone.now(), team=team, client_dialect="openai-chat", status_code=status, total_tokens=tokens
        )
    RequestLog.objects.create(time=timezone.now(), team=None, client_dialect="gemini", status_code=401)
    root = User.objects.create_superuser("root", "root@example.test", "pw")
    loner = User.objects.create_user("loner", "loner@example.test", "pw", is_staff=True)
    return {"alice": alice.user, "charlie": charlie.user, "viewer": viewer_of(alice.team), "root": root, "loner": loner}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("charlie", (1, 0, 1000)),
        ("alice", (2, 1, 30)),
        ("viewer", (2, 1, 30)),
        ("root", (4, 2, 1030)),
        ("loner", (0, 0, 0)),
    ],
)
async def test_the_live_feed_counts_only_the_teams_of_the_watcher(
    alice: Persona, charlie: Persona, who: str, expected: tuple[int, int, int]
) -> None:
    users = await sync_to_async(_traffic)(alice, charlie)
    cookie = await sync_to_async(_session_cookie)(users[who])
    ws = WebsocketCommunicator(application, "/ws/live/", headers=[(b"cookie", cookie), (b"host", b"testserver")])
    connected, _ = await ws.connect()
    assert connected
    stats = await ws.receive_json_from(timeout=5)
    await ws.disconnect()

    assert (stats["requests"], stats["failed"], stats["tokens"]) == expected


@pytest.fixture
def api_world(transactional_db: None, alice: Persona, charlie: Persona) -> Iterator[World]:
    from usage import recorder

    world = World(
        acme=_build_team(alice.team, "acme", alice),
        globex=_build_team(charlie.team, "globex", charlie),
        platform={},
    )
    yield world
    recorder.flush()


def _unechoed(content: bytes, asked: str) -> str:
    """An error body without the model name the client sent (errors name it back; that is no leak)."""
    return content.decode().replace(asked, "")


@pytest.mark.django_db(transaction=True)
def test_charlies_key_lists_none_of_alices_models_in_any_dialect(api_world: World, charlie: Persona) -> None:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {charlie.raw_key}")
    alias, prefixed = "acme-mark-model", "acmepfx/acme-mark-model"
    listings = [
        client.get("/v1/models"),
        client.get("/v1/models", HTTP_ANTHROPIC_VERSION="2023-06-01"),
        client.get("/v1beta/models"),
    ]

    for response in listings:
        assert response.status_code == 200
        text = response.content.decode()
        assert "globex-mark-model" in text  # the control: his own are listed
        assert_no_leak(text, api_world.acme.markers, response.request["PATH_INFO"])
    for asked in (alias, prefixed):
        for path in (f"/v1/models/{asked}", f"/v1beta/models/{asked}"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert_no_leak(_unechoed(response.content, asked), api_world.acme.markers, path)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("model", ["acme-mark-model", "acmepfx/acme-mark-model", "acmepfx/acme-mark-upstream-model"])
def test_charlies_key_cannot_call_alices_models_through_any_endpoint(
    api_world: World, charlie: Persona, model: str
) -> None:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {charlie.raw_key}")
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    calls = [
        ("/v1/chat/completions", chat),
        ("/v1/responses", {"model": model, "input": "hi"}),
        ("/v1/messages", {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
        (f"/v1beta/models/{model}:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]}),
    ]

    for path, body in calls:
        response = client.post(path, json.dumps(body), content_type="application/json")
        # 404 model_not_found: never routed to alice's channel (which would answer 502 from the dead port).
        assert response.status_code == 404, (path, response.status_code, response.content[:300])
        assert_no_leak(_unechoed(response.content, model), api_world.acme.markers, path)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("namespace", ["acme-mark-group", "acme-mark-route"])
def test_charlies_key_cannot_enter_alices_group_paths(api_world: World, charlie: Persona, namespace: str) -> None:
    """``/<group>/v1/...`` and path routes resolve within the key's team: alice's names are unknown to charlie."""
    client = Client(HTTP_AUTHORIZATION=f"Bearer {charlie.raw_key}")
    chat = {"model": "acme-mark-model", "messages": [{"role": "user", "content": "hi"}]}
    responses = [
        client.get(f"/{namespace}/v1/models"),
        client.get(f"/{namespace}/v1beta/models"),
        client.post(f"/{namespace}/v1/chat/completions", json.dumps(chat), content_type="application/json"),
    ]

    for response in responses:
        assert response.status_code == 404, response.content[:300]
        assert_no_leak(_unechoed(response.content, "acme-mark-model"), api_world.acme.markers, namespace)
    assert client.get("/globex-mark-group/v1/models").status_code == 200  # the control: his own group works
