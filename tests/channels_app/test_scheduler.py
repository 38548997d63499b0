"""Choosing channels for a model: aliases, prefixes, exclusions, groups, tiers, strategies and cool-downs."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from accounts.access import KeySnapshot
from accounts.models import ChannelGroup, PathRoute
from channels_app import cooldowns, scheduler
from channels_app.executors.base import UpstreamError
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
def test_a_shared_channel_serves_every_team_and_an_unshared_one_only_its_own(alice, charlie) -> None:
    _channel(alice.team, "common", shared=True, served_models=[{"name": "gpt-up", "alias": "gpt"}, {"name": "mini"}])
    _channel(alice.team, "private", served_models=[{"name": "mini"}])
    _channel(charlie.team, "theirs")
    table = _table()

    assert {scheduler.choose(table, _key(charlie), "mini").channel.name for _ in range(4)} == {"common"}
    assert {scheduler.choose(table, _key(charlie), "gpt").channel.name for _ in range(4)} == {"common", "theirs"}
    assert {scheduler.choose(table, _key(alice), "mini").channel.name for _ in range(4)} == {"common", "private"}
    assert sorted(name for name, _ in scheduler.models_for(table, _key(charlie))) == ["gpt", "mini"]


@pytest.mark.django_db
def test_another_teams_group_takes_a_shared_channel_in_by_its_match_rules_only(alice, charlie) -> None:
    _channel(alice.team, "common", shared=True, prefix="pool")
    _channel(alice.team, "private", prefix="pool")
    pool = ChannelGroup.objects.create(team=charlie.team, name="Pool", slug="pool", match_prefixes=["pool"])
    table = _table()

    limited = _key(charlie, allowed_group_ids=frozenset({pool.pk}))
    assert {scheduler.choose(table, limited, "gpt").channel.name for _ in range(4)} == {"common"}
    scope = scheduler.resolve_group(table, charlie.team.pk, "pool")
    assert scope is not None and scope.group_id == pool.pk
    assert _names(scheduler.candidates(table, _key(charlie), "gpt", group=scope)) == ["common"]
    # alice's private channel keeps to alice's team even under the same prefix.
    alices = scheduler.resolve_group(table, alice.team.pk, "pool")
    assert alices is not None and alices.group_id is None  # her implicit prefix group
    assert sorted(_names(scheduler.candidates(table, _key(alice), "gpt", group=alices))) == ["common", "private"]


@pytest.mark.django_db
def test_a_shared_channels_prefix_group_is_reachable_by_every_team(alice, charlie) -> None:
    _channel(alice.team, "common", shared=True, prefix="pool")
    table = _table()
    scope = scheduler.resolve_group(table, charlie.team.pk, "pool")
    assert scope is not None
    assert _names(scheduler.candidates(table, _key(charlie), "gpt", group=scope)) == ["common"]


@pytest.mark.django_db
def test_models_for_lists_what_a_key_may_call(alice) -> None:
    _channel(alice.team, "a", served_models=[{"name": "gpt-up", "alias": "gpt"}, {"name": "claude-x"}])
    _channel(alice.team, "off", enabled=False, served_models=[{"name": "hidden"}])
    _channel(alice.team, "qwen", kind=ProviderKind.QWEN, served_models=[{"name": "not-routable-yet"}])
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


@pytest.mark.django_db(transaction=True)
async def test_an_old_table_is_served_while_a_background_task_rebuilds_it(alice, settings) -> None:
    await sync_to_async(_channel)(alice.team, "a")
    settings.CLIRELAY_ROUTES_CACHE_SECONDS = 0
    table = await scheduler.table()
    # Changed behind this process's back (no signal), as another gateway process would.
    await Channel.objects.filter(name="a").aupdate(served_models=[{"name": "from-elsewhere"}])

    served_meanwhile = await scheduler.table()
    await asyncio.gather(*scheduler._rebuilding)
    rebuilt = await scheduler.table()

    assert served_meanwhile is table
    assert scheduler.choose(rebuilt, _key(alice), "from-elsewhere").upstream_model == "from-elsewhere"
    await asyncio.gather(*scheduler._rebuilding)


# --- candidates: tiers, strategies, cool-downs ------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    """A cool-down store on a clock the test moves by hand."""
    fake = _Clock()
    cooldowns.use(cooldowns.CooldownStore(clock=fake))
    return fake


def _fail(route: scheduler.Route, status: int = 503, **fields: object) -> float | None:
    return cooldowns.mark_failure(route, UpstreamError(status, "boom", upstream_status=status, **fields))  # type: ignore[arg-type]


def _names(routes: list[scheduler.Route]) -> list[str]:
    return [route.channel.name for route in routes]


@pytest.mark.django_db
def test_candidates_put_the_top_tier_first_and_lower_tiers_after_it_as_failover(alice) -> None:
    RuntimeSettings.objects.create(routing_strategy=RuntimeSettings.Strategy.FILL_FIRST)
    _channel(alice.team, "top-a", priority=5)
    _channel(alice.team, "top-b", priority=5)
    _channel(alice.team, "middle", priority=1)
    _channel(alice.team, "backup", priority=-1)
    assert _names(scheduler.candidates(_table(), _key(alice), "gpt")) == ["top-a", "top-b", "middle", "backup"]


@pytest.mark.django_db
@pytest.mark.parametrize("picks", [30, 31, 32])
def test_round_robin_spreads_n_picks_evenly_within_one(alice, picks: int) -> None:
    for name in ("a", "b", "c"):
        _channel(alice.team, name)
    table = _table()
    counts = Counter(scheduler.candidates(table, _key(alice), "gpt")[0].channel.name for _ in range(picks))
    assert sum(counts.values()) == picks and max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.django_db
def test_round_robin_keeps_one_cursor_per_team_and_model(alice, charlie) -> None:
    for name in ("a", "b"):
        _channel(alice.team, name, served_models=[{"name": "gpt"}, {"name": "other"}])
    _channel(charlie.team, "c1")
    table = _table()
    first = [scheduler.choose(table, _key(alice), "gpt").channel.name for _ in range(2)]
    scheduler.choose(table, _key(charlie), "gpt")
    assert scheduler.choose(table, _key(alice), "other").channel.name == "a"
    assert first == ["a", "b"] and scheduler.choose(table, _key(alice), "gpt").channel.name == "a"


@pytest.mark.django_db
def test_fill_first_sticks_to_the_first_channel_until_it_fails(alice, clock) -> None:
    RuntimeSettings.objects.create(routing_strategy=RuntimeSettings.Strategy.FILL_FIRST)
    _channel(alice.team, "a")
    _channel(alice.team, "b")
    table = _table()
    first = scheduler.choose(table, _key(alice), "gpt")
    assert {scheduler.choose(table, _key(alice), "gpt").channel.name for _ in range(5)} == {"a"}
    _fail(first, 429)
    assert {scheduler.choose(table, _key(alice), "gpt").channel.name for _ in range(5)} == {"b"}
    clock.now += 1.5  # the first 429 backs off for one second
    assert scheduler.choose(table, _key(alice), "gpt").channel.name == "a"


@pytest.mark.django_db
def test_a_cooling_channel_is_left_out_and_the_next_tier_takes_over(alice, clock) -> None:
    _channel(alice.team, "main", priority=1)
    _channel(alice.team, "backup")
    table = _table()
    _fail(scheduler.choose(table, _key(alice), "gpt"), 503)
    assert _names(scheduler.candidates(table, _key(alice), "gpt")) == ["backup"]
    clock.now += 61
    assert _names(scheduler.candidates(table, _key(alice), "gpt")) == ["main", "backup"]


@pytest.mark.django_db
def test_cool_downs_are_per_upstream_model(alice, clock) -> None:
    _channel(alice.team, "a", served_models=[{"name": "gpt"}, {"name": "mini"}])
    table = _table()
    _fail(scheduler.choose(table, _key(alice), "gpt"), 429)
    assert scheduler.choose(table, _key(alice), "mini").channel.name == "a"


@pytest.mark.django_db
def test_when_every_channel_is_cooling_the_request_gets_a_429_with_the_soonest_reset(alice, clock) -> None:
    _channel(alice.team, "a")
    _channel(alice.team, "b")
    table = _table()
    routes = scheduler.candidates(table, _key(alice), "gpt")
    _fail(routes[0], 429, cooldown_s=40)
    _fail(routes[1], 429, cooldown_s=12.2)
    with pytest.raises(scheduler.ModelCooldown) as cooling:
        scheduler.candidates(table, _key(alice), "GPT")
    err = cooling.value
    assert (err.status, err.code, err.retry_after) == (429, "model_cooldown", 13)
    assert err.details["model"] == "GPT" and err.details["reset_seconds"] == 13 and err.details["reset_time"]
    assert "GPT" in err.message
    assert scheduler.soonest_cooldown(table, _key(alice), "gpt") == pytest.approx(12.2)


@pytest.mark.django_db
def test_a_429_on_one_key_of_a_channel_leaves_its_other_keys_in_rotation(alice, clock) -> None:
    channel = _channel(alice.team, "multi")
    extra = ChannelKey.objects.create(channel=channel, secret="sk-second")
    table = _table()
    first = next(r for r in scheduler.candidates(table, _key(alice), "gpt") if r.secret == "sk-multi")
    assert (first.credential, _fail(first, 429, cooldown_s=30)) == (str(channel.pk), 30)

    picks = {scheduler.choose(table, _key(alice), "gpt").secret for _ in range(4)}
    assert picks == {"sk-second"}
    second = scheduler.choose(table, _key(alice), "gpt")
    assert second.credential == f"{channel.pk}k{extra.pk}"
    _fail(second, 429, cooldown_s=12)
    with pytest.raises(scheduler.ModelCooldown) as cooling:
        scheduler.candidates(table, _key(alice), "gpt")
    assert cooling.value.retry_after == 12  # the soonest key frees the channel
    clock.now += 13
    assert {scheduler.choose(table, _key(alice), "gpt").secret for _ in range(4)} == {"sk-second"}


@pytest.mark.django_db
def test_a_credential_scoped_failure_cools_every_model_of_that_key_only(alice, clock) -> None:
    channel = _channel(alice.team, "multi", served_models=[{"name": "gpt"}, {"name": "mini"}])
    ChannelKey.objects.create(channel=channel, secret="sk-second")
    table = _table()
    first = next(r for r in scheduler.candidates(table, _key(alice), "gpt") if r.secret == "sk-multi")
    _fail(first, 429, cooldown_s=60, scope="credential")
    for model in ("gpt", "mini"):
        assert {r.secret for r in scheduler.candidates(table, _key(alice), model)} == {"sk-second"}
    clock.now += 61
    assert {r.secret for r in scheduler.candidates(table, _key(alice), "mini")} == {"sk-multi", "sk-second"}


@pytest.mark.django_db
def test_exclude_skips_channels_already_tried_and_an_exhausted_list_is_empty(alice) -> None:
    a = _channel(alice.team, "a", priority=1)
    b = _channel(alice.team, "b")
    table = _table()
    assert _names(scheduler.candidates(table, _key(alice), "gpt", exclude={a.pk})) == ["b"]
    assert scheduler.candidates(table, _key(alice), "gpt", exclude={a.pk, b.pk}) == []


@pytest.mark.django_db
def test_a_model_nobody_serves_is_a_404_even_when_channels_are_cooling(alice, clock) -> None:
    _channel(alice.team, "a")
    table = _table()
    _fail(scheduler.choose(table, _key(alice), "gpt"), 429)
    with pytest.raises(RelayError) as missing:
        scheduler.candidates(table, _key(alice), "unknown")
    assert missing.value.status == 404


@pytest.mark.django_db
def test_disable_cooling_keeps_a_failing_channel_in_rotation(alice, clock) -> None:
    RuntimeSettings.objects.create(disable_cooling=True)
    _channel(alice.team, "a")
    table = _table()
    assert _fail(scheduler.choose(table, _key(alice), "gpt"), 429) is None
    assert scheduler.choose(table, _key(alice), "gpt").channel.name == "a"


@pytest.mark.django_db
def test_a_channel_can_switch_cooling_off_for_itself(alice, clock) -> None:
    _channel(alice.team, "a", options={"disable-cooling": True})
    _channel(alice.team, "b", priority=-1)
    table = _table()
    _fail(scheduler.choose(table, _key(alice), "gpt"), 500)
    assert scheduler.choose(table, _key(alice), "gpt").channel.name == "a"


@pytest.mark.django_db
def test_the_transient_cool_down_setting_reaches_the_routes(alice, clock) -> None:
    RuntimeSettings.objects.create(transient_error_cooldown_seconds=5)
    _channel(alice.team, "a")
    table = _table()
    assert _fail(scheduler.choose(table, _key(alice), "gpt"), 502) == pytest.approx(5)


# --- model names: aliases and fork ------------------------------------------------------------


@pytest.mark.django_db
def test_a_fork_alias_keeps_the_upstream_name_visible_too(alice) -> None:
    _channel(alice.team, "a", served_models=[{"name": "gpt-up", "alias": "gpt", "fork": True}])
    table = _table()
    assert scheduler.choose(table, _key(alice), "gpt").upstream_model == "gpt-up"
    assert scheduler.choose(table, _key(alice), "gpt-up").upstream_model == "gpt-up"


def test_the_oauth_alias_map_renames_a_kinds_models_and_fork_keeps_the_original() -> None:
    runtime = RuntimeSettings(
        oauth_model_alias={
            "codex": [{"name": "gpt-5", "alias": "g5"}, {"name": "gpt-5-mini", "alias": "mini", "fork": True}]
        },
        oauth_excluded_models={"codex": ["*-nano"]},
    )
    channel = Channel(
        kind=ProviderKind.CODEX,
        served_models=[{"name": "gpt-5"}, {"name": "gpt-5-mini"}, {"name": "gpt-5-nano"}, {"name": "o3", "alias": "x"}],
    )
    assert scheduler._visible_models(channel, runtime) == [
        ("g5", "gpt-5"),
        ("gpt-5-mini", "gpt-5-mini"),
        ("mini", "gpt-5-mini"),
        ("x", "o3"),
    ]


# --- groups and path routes -------------------------------------------------------------------


def _group(team, name: str, **fields: object) -> ChannelGroup:
    return ChannelGroup.objects.create(team=team, name=name, slug=fields.pop("slug", name.lower()), **fields)


@pytest.mark.django_db
def test_resolve_group_prefers_a_path_route_then_a_group_name_or_slug_then_an_implicit_group(alice, charlie) -> None:
    pro = _group(alice.team, "Pro Tier", slug="pro")
    PathRoute.objects.create(team=alice.team, path="/openai/pro", group=pro, fallback="default")
    _channel(alice.team, "prefixed", prefix="Fast")
    _channel(alice.team, "plain")
    table = _table()
    team = alice.team.pk
    routed = scheduler.resolve_group(table, team, "/openai/pro/")
    assert routed == scheduler.GroupScope("pro tier", pro.pk, "default", 0)
    assert scheduler.resolve_group(table, team, "pro") == scheduler.GroupScope("pro tier", pro.pk)
    assert scheduler.resolve_group(table, team, "/PRO TIER") == scheduler.GroupScope("pro tier", pro.pk)
    assert scheduler.resolve_group(table, team, "/fast") == scheduler.GroupScope("fast")
    assert scheduler.resolve_group(table, team, "default") == scheduler.GroupScope("default")
    assert scheduler.resolve_group(table, team, "/openai/fast") is None
    assert scheduler.resolve_group(table, team, "nothing") is None
    assert scheduler.resolve_group(table, charlie.team.pk, "pro") is None


@pytest.mark.django_db
def test_the_default_group_disappears_when_include_default_group_is_off(alice) -> None:
    RuntimeSettings.objects.create(include_default_group=False)
    _channel(alice.team, "plain")
    assert scheduler.resolve_group(_table(), alice.team.pk, "default") is None


@pytest.mark.django_db
def test_a_route_group_confines_candidates_to_its_members(alice) -> None:
    pro = _group(alice.team, "pro", match_prefixes=["team"], match_channels=["Named"])
    explicit = _channel(alice.team, "explicit")
    explicit.groups.add(pro)
    _channel(alice.team, "named")
    _channel(alice.team, "by-prefix", prefix="team")
    _channel(alice.team, "implicit-pro", prefix="pro")
    _channel(alice.team, "outsider")
    table = _table()
    scope = scheduler.resolve_group(table, alice.team.pk, "pro")
    assert scope is not None
    members = {route.channel.name for route in scheduler.candidates(table, _key(alice), "gpt", group=scope)}
    assert members == {"explicit", "named", "by-prefix", "implicit-pro"}
    default = scheduler.resolve_group(table, alice.team.pk, "default")
    assert default is not None
    members = {route.channel.name for route in scheduler.candidates(table, _key(alice), "gpt", group=default)}
    assert members == {"explicit", "named", "outsider"}


@pytest.mark.django_db
def test_a_group_path_reaches_models_registered_under_the_group_prefix(alice) -> None:
    RuntimeSettings.objects.create(force_model_prefix=True)
    _channel(alice.team, "p", prefix="pro")
    table = _table()
    scope = scheduler.resolve_group(table, alice.team.pk, "pro")
    assert scope is not None
    assert scheduler.choose(table, _key(alice), "gpt", group=scope).upstream_model == "gpt-up"
    with pytest.raises(RelayError):
        scheduler.choose(table, _key(alice), "gpt")


@pytest.mark.django_db
def test_fallback_none_keeps_a_request_in_its_group_even_when_the_group_serves_nothing(alice) -> None:
    pro = _group(alice.team, "pro")
    PathRoute.objects.create(team=alice.team, path="/strict", group=pro)
    _channel(alice.team, "outsider")
    table = _table()
    scope = scheduler.resolve_group(table, alice.team.pk, "strict")
    assert scope is not None
    with pytest.raises(RelayError) as missing:
        scheduler.candidates(table, _key(alice), "gpt", group=scope)
    assert missing.value.status == 404


@pytest.mark.django_db
def test_fallback_default_leaves_the_group_only_when_it_has_nothing_available(alice, clock) -> None:
    pro = _group(alice.team, "pro")
    member = _channel(alice.team, "member")
    member.groups.add(pro)
    _channel(alice.team, "outsider")
    PathRoute.objects.create(team=alice.team, path="/loose", group=pro, fallback="default")
    table = _table()
    scope = scheduler.resolve_group(table, alice.team.pk, "loose")
    assert scope is not None
    assert _names(scheduler.candidates(table, _key(alice), "gpt", group=scope)) == ["member"]
    _fail(scheduler.choose(table, _key(alice), "gpt", group=scope), 429)
    assert _names(scheduler.candidates(table, _key(alice), "gpt", group=scope)) == ["outsider"]


@pytest.mark.django_db
def test_a_grouped_request_fails_over_within_its_group(alice, clock) -> None:
    pro = _group(alice.team, "pro")
    for name in ("m1", "m2"):
        _channel(alice.team, name).groups.add(pro)
    _channel(alice.team, "outsider", priority=9)
    table = _table()
    scope = scheduler.resolve_group(table, alice.team.pk, "pro")
    assert scope is not None
    first = scheduler.choose(table, _key(alice), "gpt", group=scope)
    _fail(first, 502)
    second = scheduler.candidates(table, _key(alice), "gpt", group=scope, exclude={first.channel.id})
    assert _names(second) == [({"m1", "m2"} - {first.channel.name}).pop()]
    with pytest.raises(scheduler.ModelCooldown):
        _fail(second[0], 502)
        scheduler.candidates(table, _key(alice), "gpt", group=scope)


@pytest.mark.django_db
def test_scoped_selection_is_smooth_weighted_round_robin_with_priority_as_weight(alice) -> None:
    pro = _group(alice.team, "pro")
    _channel(alice.team, "heavy", priority=3).groups.add(pro)
    _channel(alice.team, "light", priority=1).groups.add(pro)
    _channel(alice.team, "never", priority=-1).groups.add(pro)
    table = _table()
    scope = scheduler.resolve_group(table, alice.team.pk, "pro")
    assert scope is not None
    picks = [scheduler.candidates(table, _key(alice), "gpt", group=scope) for _ in range(8)]
    assert [_names(p)[0] for p in picks] == ["heavy", "heavy", "light", "heavy"] * 2
    assert _names(picks[2]) == ["light", "heavy", "never"]


@pytest.mark.django_db
def test_scoped_selection_takes_the_groups_priority_for_channels_without_their_own(alice) -> None:
    big = _group(alice.team, "big", priority=2)
    _channel(alice.team, "in-big").groups.add(big)
    _channel(alice.team, "own", priority=1).groups.add(big)
    table = _table()
    limited = _key(alice, allowed_group_ids=frozenset({big.pk}))
    counts = Counter(scheduler.candidates(table, limited, "gpt")[0].channel.name for _ in range(30))
    assert counts == {"in-big": 20, "own": 10}


@pytest.mark.django_db
def test_scoped_selection_with_equal_weights_spreads_evenly(alice) -> None:
    pro = _group(alice.team, "pro")
    for name in ("a", "b", "c"):
        _channel(alice.team, name).groups.add(pro)
    table = _table()
    scope = scheduler.resolve_group(table, alice.team.pk, "pro")
    assert scope is not None
    counts = Counter(scheduler.choose(table, _key(alice), "gpt", group=scope).channel.name for _ in range(31))
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.django_db
def test_a_fill_first_group_drains_its_first_channel_of_the_top_tier_until_it_fails(alice, clock) -> None:
    ordered = _group(alice.team, "ordered", strategy=ChannelGroup.Strategy.FILL_FIRST)
    for name, priority in (("second", 0), ("first", 5), ("also-first", 5)):
        _channel(alice.team, name, priority=priority).groups.add(ordered)
    _channel(alice.team, "outsider", priority=9)
    table = _table()
    scope = scheduler.resolve_group(table, alice.team.pk, "ordered")
    assert scope is not None and scope.strategy == "fill-first"

    picks = [scheduler.candidates(table, _key(alice), "gpt", group=scope) for _ in range(5)]
    assert all(_names(p) == ["first", "also-first", "second"] for p in picks)
    _fail(picks[0][0], 429)
    assert _names(scheduler.candidates(table, _key(alice), "gpt", group=scope)) == ["also-first", "second"]
    # Plain /v1 keeps the global strategy (round-robin) and sees every channel.
    assert {scheduler.choose(table, _key(alice), "gpt").channel.name for _ in range(3)} == {"outsider"}


@pytest.mark.django_db
def test_a_round_robin_group_rotates_its_top_tier_and_keeps_lower_tiers_as_fallback(alice) -> None:
    RuntimeSettings.objects.create(routing_strategy=RuntimeSettings.Strategy.FILL_FIRST)
    rotating = _group(alice.team, "rotating", strategy=ChannelGroup.Strategy.ROUND_ROBIN)
    for name, priority in (("a", 1), ("b", 1), ("c", 1), ("spare", 0)):
        _channel(alice.team, name, priority=priority).groups.add(rotating)
    table = _table()
    scope = scheduler.resolve_group(table, alice.team.pk, "rotating")
    assert scope is not None

    picks = [scheduler.candidates(table, _key(alice), "gpt", group=scope) for _ in range(30)]
    assert Counter(_names(p)[0] for p in picks) == {"a": 10, "b": 10, "c": 10}
    assert all(_names(p)[-1] == "spare" for p in picks)
    assert {scheduler.choose(table, _key(alice), "gpt").channel.name for _ in range(3)} == {"a"}  # global: fill-first


@pytest.mark.django_db
def test_a_path_route_carries_its_groups_strategy(alice) -> None:
    ordered = _group(alice.team, "ordered", strategy=ChannelGroup.Strategy.FILL_FIRST)
    PathRoute.objects.create(team=alice.team, path="/team-a/pro", group=ordered)
    scope = scheduler.resolve_group(_table(), alice.team.pk, "/team-a/pro")
    assert scope is not None and (scope.name, scope.strategy) == ("ordered", "fill-first")


@pytest.mark.django_db
def test_a_key_limited_to_groups_may_not_use_another_group(alice) -> None:
    pro = _group(alice.team, "pro")
    free = _group(alice.team, "free")
    table = _table()
    limited = _key(alice, allowed_group_ids=frozenset({pro.pk}))
    pro_scope = scheduler.resolve_group(table, alice.team.pk, "pro")
    free_scope = scheduler.resolve_group(table, alice.team.pk, "free")
    assert pro_scope is not None and free_scope is not None and free.pk == free_scope.group_id
    assert scheduler.group_allowed(limited, pro_scope) and not scheduler.group_allowed(limited, free_scope)
    assert scheduler.group_allowed(_key(alice), free_scope)


@pytest.mark.django_db
def test_charlie_never_gets_alices_channels_even_through_her_group_path(alice, charlie) -> None:
    pro = _group(alice.team, "pro")
    _channel(alice.team, "alices").groups.add(pro)
    table = _table()
    alice_scope = scheduler.resolve_group(table, alice.team.pk, "pro")
    assert alice_scope is not None and scheduler.resolve_group(table, charlie.team.pk, "pro") is None
    with pytest.raises(RelayError):
        scheduler.candidates(table, _key(charlie), "gpt", group=alice_scope)


@pytest.mark.django_db
def test_the_routing_table_is_rebuilt_when_a_group_or_a_path_route_changes(alice) -> None:
    _channel(alice.team, "a")
    table = async_to_sync(scheduler.table)()
    group = _group(alice.team, "pro")
    rebuilt = async_to_sync(scheduler.table)()
    assert rebuilt is not table and scheduler.resolve_group(rebuilt, alice.team.pk, "pro") is not None
    PathRoute.objects.create(team=alice.team, path="/x/y", group=group)
    again = async_to_sync(scheduler.table)()
    assert again is not rebuilt and scheduler.resolve_group(again, alice.team.pk, "/x/y") is not None
    group.delete()
    assert scheduler.resolve_group(async_to_sync(scheduler.table)(), alice.team.pk, "pro") is None
