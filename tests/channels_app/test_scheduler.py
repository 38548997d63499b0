"""Choosing a channel for a model: aliases, prefixes, exclusions, tiers and strategies."""

from __future__ import annotations

from collections import Counter

import pytest
from asgiref.sync import async_to_sync

from accounts.access import KeySnapshot
from accounts.models import ChannelGroup
from channels_app import scheduler
from channels_app.models import Channel, ChannelKey, ProviderKind, RuntimeSettings
from gateway.errors import RelayError


def _key(persona, **overrides: object) -> KeySnapshot:
    values: dict[str, object] = {
        "id": persona.key.pk,
        "team_id": persona.team.pk,
        "name": "k",
        "display": "sk-ab…xyz",
        "key_hash": persona.key.key_hash,
        "enabled": True,
        "expires_at": None,
        "allowed_models": (),
        "allowed_group_ids": frozenset(),
        "allowed_channel_ids": frozenset(),
        "system_prompt": "",
    }
    values.update(overrides)
    return KeySnapshot(**values)  # type: ignore[arg-type]


def _channel(team, name: str, **fields: object) -> Channel:
    values: dict[str, object] = {
        "kind": ProviderKind.OPENAI_COMPATIBILITY,
        "base_url": "http://127.0.0.1:9/v1",
        "secret": f"sk-{name}",
        "served_models": [{"name": "gpt-up", "alias": "gpt"}],
    }
    values.update(fields)
    return Channel.objects.create(team=team, name=name, **values)


def _table() -> scheduler.RoutingTable:
    scheduler.invalidate()
    return async_to_sync(scheduler.table)()


@pytest.mark.django_db
def test_an_alias_routes_to_the_upstream_name_and_the_upstream_name_is_not_exposed(alice) -> None:
    _channel(alice.team, "a")
    route = scheduler.choose(_table(), _key(alice), "GPT")
    assert route.upstream_model == "gpt-up" and route.secret == "sk-a"
    with pytest.raises(RelayError) as missing:
        scheduler.choose(_table(), _key(alice), "gpt-up")
    assert missing.value.status == 404 and missing.value.code == "model_not_found"


@pytest.mark.django_db
def test_round_robin_spreads_requests_evenly_over_the_top_tier(alice) -> None:
    for name in ("a", "b", "c"):
        _channel(alice.team, name)
    _channel(alice.team, "backup", priority=-1)
    table = _table()
    picks = Counter(scheduler.choose(table, _key(alice), "gpt").channel.name for _ in range(30))
    assert picks == {"a": 10, "b": 10, "c": 10}


@pytest.mark.django_db
def test_extra_keys_of_a_channel_take_turns(alice) -> None:
    channel = _channel(alice.team, "multi")
    ChannelKey.objects.create(channel=channel, secret="sk-second")
    table = _table()
    assert {scheduler.choose(table, _key(alice), "gpt").secret for _ in range(2)} == {"sk-multi", "sk-second"}


@pytest.mark.django_db
def test_fill_first_always_takes_the_first_channel(alice) -> None:
    RuntimeSettings.objects.create(routing_strategy=RuntimeSettings.Strategy.FILL_FIRST)
    first = _channel(alice.team, "a")
    _channel(alice.team, "b")
    table = _table()
    assert {scheduler.choose(table, _key(alice), "gpt").channel.id for _ in range(5)} == {first.pk}


@pytest.mark.django_db
def test_prefixed_models_and_excluded_models(alice) -> None:
    _channel(
        alice.team,
        "p",
        prefix="team",
        served_models=[{"name": "gemini-2.5-flash"}, {"name": "gemini-2.5-pro"}, {"name": "other"}],
        excluded_models=["*-PRO"],
    )
    table = _table()
    assert scheduler.choose(table, _key(alice), "team/gemini-2.5-flash").upstream_model == "gemini-2.5-flash"
    assert scheduler.choose(table, _key(alice), "other").upstream_model == "other"
    with pytest.raises(RelayError):
        scheduler.choose(table, _key(alice), "gemini-2.5-pro")


@pytest.mark.django_db
def test_force_model_prefix_hides_the_unprefixed_name(alice) -> None:
    RuntimeSettings.objects.create(force_model_prefix=True)
    _channel(alice.team, "p", prefix="team")
    table = _table()
    assert scheduler.choose(table, _key(alice), "team/gpt").upstream_model == "gpt-up"
    with pytest.raises(RelayError):
        scheduler.choose(table, _key(alice), "gpt")


@pytest.mark.django_db
def test_a_key_stays_inside_its_team_groups_and_channels(alice, charlie) -> None:
    pro = ChannelGroup.objects.create(team=alice.team, name="Pro", slug="pro")
    grouped = _channel(alice.team, "grouped")
    grouped.groups.add(pro)
    loose = _channel(alice.team, "loose")
    _channel(charlie.team, "theirs")
    table = _table()
    in_group = _key(alice, allowed_group_ids=frozenset({pro.pk}))
    assert {scheduler.choose(table, in_group, "gpt").channel.id for _ in range(4)} == {grouped.pk}
    only_loose = _key(alice, allowed_channel_ids=frozenset({loose.pk}))
    assert {scheduler.choose(table, only_loose, "gpt").channel.id for _ in range(4)} == {loose.pk}
    assert {scheduler.choose(table, _key(charlie), "gpt").channel.name for _ in range(4)} == {"theirs"}


@pytest.mark.django_db
def test_models_for_lists_what_a_key_may_call(alice) -> None:
    _channel(alice.team, "a", served_models=[{"name": "gpt-up", "alias": "gpt"}, {"name": "claude-x"}])
    _channel(alice.team, "off", enabled=False, served_models=[{"name": "hidden"}])
    _channel(alice.team, "claude", kind=ProviderKind.CLAUDE_API_KEY, served_models=[{"name": "not-routable-yet"}])
    table = _table()
    assert sorted(name for name, _ in scheduler.models_for(table, _key(alice))) == ["claude-x", "gpt"]
    only_gpt = _key(alice, allowed_models=("gpt*",))
    assert [name for name, _ in scheduler.models_for(table, only_gpt)] == ["gpt"]


@pytest.mark.django_db
def test_the_routing_table_is_rebuilt_when_a_channel_changes(alice) -> None:
    channel = _channel(alice.team, "a")
    table = async_to_sync(scheduler.table)()
    assert async_to_sync(scheduler.table)() is table
    channel.served_models = [{"name": "new-model"}]
    channel.save()
    rebuilt = async_to_sync(scheduler.table)()
    assert rebuilt is not table
    assert scheduler.choose(rebuilt, _key(alice), "new-model").upstream_model == "new-model"
