"""``manage.py import_config``: a CliRelay config.yaml becomes keys, channels, routing and settings.

``tests/fixtures/config/example.yaml`` is the reference example as shipped; ``full.yaml`` is the
same file with every commented section uncommented.
"""

from __future__ import annotations

import re
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, models

from accounts.keys import hash_key
from accounts.models import ApiKey, ChannelGroup, PathRoute, Team
from channels_app.config_import import ConfigError, ImportReport, import_config
from channels_app.models import Channel, ChannelKey, ProxyEntry, RuntimeSettings
from channels_app.scheduler import build_table
from gateway.encryption import decrypt
from tests.conftest import Persona
from usage.models import LogStorageSettings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"
EXAMPLE = FIXTURES / "example.yaml"
FULL = FIXTURES / "full.yaml"
FULL_TEXT = FULL.read_text()

_TABLES: tuple[Any, ...] = (
    Team,
    ApiKey,
    ApiKey.allowed_channel_groups.through,
    ApiKey.allowed_channels.through,
    Channel,
    Channel.groups.through,
    ChannelKey,
    ChannelGroup,
    PathRoute,
    ProxyEntry,
    RuntimeSettings,
    LogStorageSettings,
)


def _command(path: Path, *args: str) -> str:
    out = StringIO()
    call_command("import_config", str(path), *args, stdout=out)
    return out.getvalue()


def _snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row the importer may touch, timestamps included."""
    return {table._meta.label: list(table.objects.order_by("pk").values()) for table in _TABLES}


def _line(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


def _stored(table: type[models.Model], column: str, pk: int) -> str:
    """A column exactly as the database holds it, bypassing field decryption."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table._meta.db_table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


@pytest.fixture
def full(db: None) -> ImportReport:
    return import_config(FULL_TEXT)


# --- the reference files -----------------------------------------------------------------------


def test_the_shipped_example_imports_cleanly(db: None) -> None:
    out = _command(EXAMPLE)

    assert "API keys: 3 created, 0 updated, 0 unchanged" in out
    assert "unknown key" not in out
    team = Team.objects.get(slug="default")
    for number in (1, 2, 3):
        key = ApiKey.objects.for_raw_key(f"your-api-key-{number}").get()
        assert (key.team, key.name, key.enabled) == (team, f"api-key-{number}", True)
    runtime = RuntimeSettings.objects.get()
    assert (runtime.request_retry, runtime.max_retry_interval, runtime.routing_strategy) == (3, 30, "round-robin")
    assert runtime.include_default_group
    storage = LogStorageSettings.objects.get()
    assert (storage.store_content, storage.content_retention_days, storage.max_total_size_mb) == (True, 30, 1024)


def test_client_keys_are_stored_hashed_and_never_in_plain(full: ImportReport) -> None:
    raws = ["sk-user-pro", "sk-team-a", "your-api-key-1", "your-api-key-2", "your-api-key-3"]

    names = [ApiKey.objects.for_raw_key(raw).get().name for raw in raws]

    assert names == ["Pro User", "Team A", "api-key-1", "api-key-2", "api-key-3"]
    assert ApiKey.objects.get(name="Pro User").key_hash == hash_key("sk-user-pro")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table}")
        cells = [str(cell) for row in cursor.fetchall() for cell in row]
    assert not [cell for cell in cells for raw in raws if raw in cell]


def test_every_channel_kind_is_stored_with_its_secret_encrypted(full: ImportReport) -> None:
    kinds = dict(Channel.objects.values_list("name", "kind"))

    assert kinds == {
        "gemini-api-key-1": "gemini-api-key",
        "gemini-api-key-2": "gemini-api-key",
        "claude-api-key-1": "claude-api-key",
        "claude-api-key-2": "claude-api-key",
        "codex-api-key-1": "codex-api-key",
        "vertex-api-key-1": "vertex-api-key",
        "openrouter": "openai-compatibility",
    }
    gemini = Channel.objects.get(name="gemini-api-key-2")
    stored = _stored(Channel, "secret", gemini.pk)
    assert stored.startswith("fernet:") and "AIzaSy" not in stored
    assert decrypt(stored) == gemini.secret == "AIzaSy...02"
    proxied = Channel.objects.get(name="codex-api-key-1")
    assert decrypt(_stored(Channel, "proxy_url", proxied.pk)) == "socks5://proxy.example.com:1080"


def test_channel_models_aliases_and_exclusions_are_kept(full: ImportReport) -> None:
    gemini = Channel.objects.get(name="gemini-api-key-1")
    vertex = Channel.objects.get(name="vertex-api-key-1")

    assert (gemini.prefix, gemini.base_url) == ("test", "https://generativelanguage.googleapis.com")
    assert gemini.headers == {"X-Custom-Header": "custom-value"}
    assert gemini.served_models == [{"name": "gemini-2.5-flash", "alias": "gemini-flash"}]
    assert gemini.excluded_models == ["gemini-2.5-pro", "gemini-2.5-*", "*-preview", "*flash*"]
    assert gemini.model_routes() == []  # its own exclusions cover its only model
    assert vertex.model_routes() == [("vertex-flash", "gemini-2.5-flash"), ("vertex-pro", "gemini-2.5-pro")]


def test_claude_cloak_goes_into_options_and_sensitive_words_are_reported(full: ImportReport) -> None:
    claude = Channel.objects.get(name="claude-api-key-2")

    assert claude.options == {"cloak": {"mode": "auto", "strict-mode": False, "cache-user-id": True}}
    assert Channel.objects.get(name="claude-api-key-1").options == {}
    line = _line(FULL_TEXT, "sensitive-words:")
    assert any(w.startswith(f"line {line}: claude-api-key[1].cloak.sensitive-words is not") for w in full.warnings)


def test_openai_compatible_extra_keys_become_channel_keys(full: ImportReport) -> None:
    openrouter = Channel.objects.get(name="openrouter")

    assert (openrouter.secret, openrouter.proxy_url) == ("sk-or-v1-...b780", "socks5://proxy.example.com:1080")
    assert [(k.secret, k.proxy_url) for k in openrouter.extra_keys.all()] == [("sk-or-v1-...b781", "")]
    assert openrouter.model_routes() == [("kimi-k2", "moonshotai/kimi-k2:free")]
    assert _stored(ChannelKey, "secret", openrouter.extra_keys.get().pk).startswith("fernet:")


def test_routing_groups_path_routes_and_key_scopes_are_stored(full: ImportReport) -> None:
    pro, team_a = ChannelGroup.objects.get(slug="pro"), ChannelGroup.objects.get(slug="team-a")
    routes = {route.path: (route.group, route.strip_prefix, route.fallback) for route in PathRoute.objects.all()}

    assert (pro.name, pro.priority, pro.description, pro.match_prefixes) == ("pro", 100, "Paid channels", ["pro"])
    assert (team_a.match_prefixes, team_a.match_channels) == (["team-a"], ["Team A Codex"])
    assert routes == {"/pro": (pro, True, "none"), "/team-a": (team_a, True, "default")}
    assert list(ApiKey.objects.get(name="Pro User").allowed_channel_groups.all()) == [pro]
    team_key = ApiKey.objects.get(name="Team A")
    assert set(team_key.allowed_channel_groups.all()) == {pro, team_a}
    # Its only allowed channel does not exist; an empty list would allow every channel.
    assert not team_key.enabled and not team_key.allowed_channels.exists()
    assert any("api-key-entries[1] is imported disabled" in warning for warning in full.warnings)


def test_runtime_settings_payload_and_oauth_maps_are_stored(full: ImportReport) -> None:
    runtime = RuntimeSettings.objects.get()

    assert (runtime.streaming_keepalive_seconds, runtime.streaming_bootstrap_retries) == (15, 1)
    assert runtime.oauth_model_alias["gemini-cli"] == [{"name": "gemini-2.5-pro", "alias": "g2.5p", "fork": True}]
    assert sorted(runtime.oauth_model_alias) == sorted(runtime.oauth_excluded_models)
    assert runtime.oauth_excluded_models["codex"] == ["gpt-5-codex-mini"]
    rules = runtime.payload_rules
    assert sorted(rules) == ["default", "default-raw", "filter", "override", "override-raw"]
    override = {"models": [{"name": "gpt-*", "protocol": "codex"}], "params": {"reasoning.effort": "high"}}
    assert rules["override"] == [override]
    assert rules["default-raw"][0]["params"]["generationConfig.responseJsonSchema"].startswith('{"type":"object"')
    assert rules["filter"][0]["params"][0] == "generationConfig.thinkingConfig.thinkingBudget"


def test_keys_without_meaning_here_are_reported_as_ignored_and_r10_keys_as_unsupported(full: ImportReport) -> None:
    assert f"line {_line(FULL_TEXT, 'ampcode:')}: ampcode: ignored: " in "\n".join(full.ignored)
    assert any(line.startswith("line 7: host: ignored: set HOST and PORT") for line in full.ignored)
    switch = f"line {_line(FULL_TEXT, 'switch-project:')}: quota-exceeded.switch-project is not supported"
    assert f"{switch}; add one credential per project instead" in full.warnings
    assert not [warning for warning in full.warnings if "unknown key" in warning]


# --- idempotence -------------------------------------------------------------------------------


def test_reimporting_the_same_file_changes_nothing(full: ImportReport) -> None:
    before = _snapshot()

    out = _command(FULL)

    assert _snapshot() == before  # updated_at included
    counts = [line for line in out.splitlines() if " created, " in line]
    assert len(counts) == 8 and all(", 0 updated" in line and line.split(":")[1].startswith(" 0 ") for line in counts)
    assert "Nothing changed." in out


def test_a_changed_value_updates_only_what_changed(full: ImportReport) -> None:
    before = _snapshot()
    text = FULL_TEXT.replace("request-retry: 3", "request-retry: 5").replace('"sk-or-v1-...b781"', '"sk-new"')

    report = import_config(text)

    changed = {label: t for label, t in report.tallies.items() if t.created or t.updated or t.deleted}
    assert {label: (t.created, t.updated, t.deleted) for label, t in changed.items()} == {
        "runtime settings": (0, 1, 0),
        "extra channel keys": (1, 0, 1),
    }
    assert RuntimeSettings.objects.get().request_retry == 5
    assert _snapshot()["channels_app.Channel"] == before["channels_app.Channel"]
    assert [k.secret for k in Channel.objects.get(name="openrouter").extra_keys.all()] == ["sk-new"]


# --- errors ------------------------------------------------------------------------------------


def test_a_syntax_error_names_its_line_and_writes_nothing(db: None, tmp_path: Path) -> None:
    import_config(EXAMPLE.read_text())
    before = _snapshot()
    broken = tmp_path / "config.yaml"
    broken.write_text(FULL_TEXT.replace("max-retry-interval: 30", "max-retry-interval: 30: 40"))

    with pytest.raises(CommandError, match=rf"line {_line(FULL_TEXT, 'max-retry-interval: 30')}, column \d+: YAML"):
        _command(broken)

    assert _snapshot() == before


@pytest.mark.parametrize(
    ("original", "broken", "problem"),
    [
        ("request-retry: 3", 'request-retry: "abc"', "request-retry must be a whole number, got 'abc'"),
        ("api-key-entries:", 'api-key-entries: "sk-user-pro"\nold-entries:', "api-key-entries must be a list"),
        ("content-retention-days: 30", "content-retention-days: [30]", "content-retention-days must be a whole"),
        ("  strategy: ", "  strategy: random #", "routing.strategy must be round-robin or fill-first"),
    ],
)
def test_a_wrong_type_names_its_line_and_writes_nothing(db: None, original: str, broken: str, problem: str) -> None:
    import_config(EXAMPLE.read_text())
    before = _snapshot()

    with pytest.raises(ConfigError) as error:
        import_config(FULL_TEXT.replace(original, broken, 1))

    assert str(error.value).startswith(f"line {_line(FULL_TEXT, original)}: ")
    assert problem in str(error.value)
    assert _snapshot() == before


def test_a_raw_payload_value_must_be_valid_json(db: None) -> None:
    text = 'payload:\n  override-raw:\n    - models: [{name: "gpt-*"}]\n      params:\n        x: "{not json"\n'

    with pytest.raises(ConfigError, match=r"^line 5: payload.override-raw\[0\].params.x must be valid JSON"):
        import_config(text)


def test_a_missing_file_is_a_clear_error(db: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot read"):
        _command(tmp_path / "absent.yaml")


def test_an_unknown_team_is_an_error(db: None) -> None:
    with pytest.raises(ConfigError, match="no team with slug 'nope'"):
        import_config("api-keys: [k]\n", "nope")
    assert not Team.objects.exists()


def test_two_channels_with_one_name_are_an_error(db: None) -> None:
    text = "gemini-api-key:\n  - api-key: a\n    name: Main\nclaude-api-key:\n  - api-key: b\n    name: main\n"

    with pytest.raises(ConfigError, match=r"^line 5: claude-api-key\[0\] is named 'main', like the channel on line 2"):
        import_config(text)
    assert not Channel.objects.exists()


def test_reserved_paths_cannot_be_routed(db: None) -> None:
    text = "routing:\n  channel-groups: [{name: pro}]\n  path-routes:\n    - {path: /v1, group: pro}\n"

    with pytest.raises(ConfigError, match=r"^line 4: routing\.path-routes\[0\]\.path /v1 is reserved"):
        import_config(text)


# --- everything else the format says -----------------------------------------------------------


def test_unknown_keys_are_reported_not_fatal(db: None) -> None:
    text = "frobnicate: 1\ngemini-api-key:\n  - api-key: k\n    colour: red\nrouting:\n  wibble: true\n"

    report = import_config(text + "quota-exceeded: true\n")

    assert report.warnings == [
        "line 1: unknown key: frobnicate",
        "line 7: quota-exceeded is not a mapping; ignored",
        "line 4: unknown key: gemini-api-key[0].colour",
        "line 6: unknown key: routing.wibble",
    ]
    assert Channel.objects.get().secret == "k"


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("fill-first", "fill-first"),
        ("ff", "fill-first"),
        ("fillfirst", "fill-first"),
        ("Fill-First", "fill-first"),
        ("FF", "fill-first"),
        ("round-robin", "round-robin"),
        ("roundrobin", "round-robin"),
        ("rr", "round-robin"),
        ('""', "round-robin"),
    ],
)
def test_routing_strategy_aliases_are_accepted(db: None, written: str, stored: str) -> None:
    RuntimeSettings.objects.create(pk=1, routing_strategy="fill-first" if stored == "round-robin" else "round-robin")

    import_config(f"routing:\n  strategy: {written}\n")

    assert RuntimeSettings.objects.get().routing_strategy == stored


@pytest.mark.parametrize(
    ("block", "stored"),
    [
        ("{content-retention-days: -5, max-total-size-mb: -1, cleanup-interval-minutes: 0}", (True, 0, 1440, 0, True)),
        (
            "{store-content: false, content-retention-days: 0, cleanup-interval-minutes: 0, "
            "max-total-size-mb: 0, vacuum-on-cleanup: false}",
            (True, 30, 1440, 1024, True),
        ),
        ("{store-content: false, content-retention-days: 7}", (False, 7, 1440, 1024, True)),
    ],
)
def test_log_storage_is_normalised_as_the_reference_does(db: None, block: str, stored: tuple[Any, ...]) -> None:
    import_config(f"request-log-storage: {block}\n")

    fields = ("store_content", "content_retention_days", "cleanup_interval_minutes", "max_total_size_mb")
    assert LogStorageSettings.objects.values_list(*fields, "vacuum_on_cleanup").get() == stored


def test_a_section_the_file_leaves_out_keeps_its_stored_values(db: None) -> None:
    RuntimeSettings.objects.create(pk=1, disable_cooling=True, request_retry=9)

    import_config("request-retry: 2\n")

    assert RuntimeSettings.objects.values_list("disable_cooling", "request_retry").get() == (True, 2)


def test_key_entry_limits_are_stored(db: None) -> None:
    text = (
        "api-key-entries:\n  - key: sk-limited\n    disabled: true\n    daily-limit: 100\n    total-quota: 1000\n"
        "    spending-limit: 12.5\n    concurrency-limit: 2\n    rpm-limit: 60\n    tpm-limit: -1\n"
        "    allowed-models: [gpt-*]\n    system-prompt: Be brief.\n    created-at: 2025-03-01T08:00:00Z\n"
    )

    report = import_config(text)

    key = ApiKey.objects.for_raw_key("sk-limited").get()
    assert not key.enabled
    assert (key.daily_request_limit, key.total_request_limit, key.concurrency_limit) == (100, 1000, 2)
    assert (key.spending_limit_usd, key.rpm_limit, key.tpm_limit) == (Decimal("12.5"), 60, 0)
    assert (key.allowed_models, key.system_prompt, key.created_at.isoformat()) == (
        ["gpt-*"],
        "Be brief.",
        "2025-03-01T08:00:00+00:00",
    )
    assert report.warnings == ["line 9: api-key-entries[0].tpm-limit is negative; stored as 0"]
    assert import_config(text).changes == 0


def test_blank_key_names_are_backfilled_around_the_names_the_team_uses(alice: Persona) -> None:
    ApiKey(team=alice.team, name="api-key-1", key_hash="x" * 64).save()

    import_config("api-key-entries:\n  - key: k3\n  - key: k4\n    name: api-key-3\napi-keys: [k1]\n", "acme")

    names = {raw: ApiKey.objects.for_raw_key(raw).get().name for raw in ("k3", "k4", "k1")}
    assert names == {"k3": "api-key-2", "k4": "api-key-3", "k1": "api-key-4"}


def test_an_import_into_alices_team_leaves_charlies_alone(alice: Persona, charlie: Persona) -> None:
    charlies_key = ApiKey.objects.filter(team=charlie.team).values().get()

    import_config(FULL_TEXT, "acme")

    assert Channel.objects.filter(team=alice.team).count() == 7
    assert not Channel.objects.filter(team=charlie.team).exists()
    assert not ChannelGroup.objects.filter(team=charlie.team).exists()
    assert not PathRoute.objects.filter(team=charlie.team).exists()
    assert ApiKey.objects.filter(team=charlie.team).values().get() == charlies_key
    assert not Team.objects.filter(slug="default").exists()


def test_a_key_of_another_team_is_refused_and_nothing_is_written(alice: Persona, charlie: Persona) -> None:
    text = f"gemini-api-key:\n  - api-key: g\napi-keys:\n  - {charlie.raw_key}\n"

    with pytest.raises(ConfigError, match=r"^line 4: api-keys\[0\] is already a key of another team"):
        import_config(text, "acme")

    assert not Channel.objects.exists()
    assert ApiKey.objects.for_raw_key(charlie.raw_key).get().team == charlie.team


def test_pool_proxies_are_imported_and_channels_point_at_them(db: None) -> None:
    text = (
        "proxy-pool:\n"
        "  - {id: HK Proxy, url: 'socks5://user:pw@hk.example:1080', description: Hong Kong}\n"
        "  - {id: broken, url: 'ftp://nowhere'}\n"
        "  - {id: hk-proxy, url: 'http://again.example:8080'}\n"
        "gemini-api-key:\n  - {api-key: g, proxy-id: hk proxy}\n  - {api-key: h, proxy-id: gone}\n"
    )

    report = import_config(text)

    proxy = ProxyEntry.objects.get()
    assert (proxy.name, proxy.url, proxy.description, proxy.enabled) == (
        "hk-proxy",
        "socks5://user:pw@hk.example:1080",
        "Hong Kong",
        True,
    )
    assert decrypt(_stored(ProxyEntry, "url", proxy.pk)) == proxy.url
    assert Channel.objects.get(name="gemini-api-key-1").proxy == proxy
    assert Channel.objects.get(name="gemini-api-key-2").proxy is None
    assert [warning.split(":")[0] for warning in report.warnings] == ["line 3", "line 4", "line 7"]


def test_a_key_restricted_to_a_channel_prefix_gets_that_implicit_group(db: None) -> None:
    text = "codex-api-key: [{api-key: c, prefix: team}]\napi-key-entries: [{key: k, allowed-channel-groups: [team]}]\n"

    import_config(text)

    key = ApiKey.objects.for_raw_key("k").get()
    group = key.allowed_channel_groups.get()
    assert key.enabled and (group.name, group.match_prefixes) == ("team", ["team"])
    assert list(group.channels.values_list("secret", flat=True)) == ["c"]
    assert import_config(text).changes == 0


# --- routing and retry keys, one by one --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "stored"),
    [
        ("request-retry: 5", "request_retry", 5),
        ("max-retry-interval: 12", "max_retry_interval", 12),
        ("max-retry-credentials: 2", "max_retry_credentials", 2),
        ("max-retry-credentials: 0", "max_retry_credentials", 0),
        ("transient-error-cooldown-seconds: 5", "transient_error_cooldown_seconds", 5),
        ("transient-error-cooldown-seconds: 0", "transient_error_cooldown_seconds", 0),
        ("transient-error-cooldown-seconds: -1", "transient_error_cooldown_seconds", -1),
        ("transient-error-cooldown-seconds: 90.0", "transient_error_cooldown_seconds", 90),
        ("disable-cooling: true", "disable_cooling", True),
        ("force-model-prefix: true", "force_model_prefix", True),
        ("streaming:\n  keepalive-seconds: 20", "streaming_keepalive_seconds", 20),
        ("routing:\n  include-default-group: false", "include_default_group", False),
    ],
)
def test_each_routing_and_retry_key_is_stored(db: None, text: str, field: str, stored: object) -> None:
    report = import_config(f"api-keys: [k]\n{text}\n")

    assert getattr(RuntimeSettings.objects.get(), field) == stored
    assert (report.warnings, report.ignored) == ([], [])
    assert import_config(f"api-keys: [k]\n{text}\n").changes == 0


def test_a_negative_retry_count_is_stored_as_zero_with_a_warning(db: None) -> None:
    report = import_config("request-retry: 1\nmax-retry-credentials: -1\nmax-retry-interval: -5\n")

    fields = ("request_retry", "max_retry_credentials", "max_retry_interval")
    assert RuntimeSettings.objects.values_list(*fields).get() == (1, 0, 0)
    assert sorted(report.warnings) == [
        "line 2: max-retry-credentials is negative; stored as 0",
        "line 3: max-retry-interval is negative; stored as 0",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "transient-error-cooldown-seconds: -2",
            "transient-error-cooldown-seconds must be -1 (no cool-down), 0 (60 s) or a number of seconds, got -2",
        ),
        (
            "transient-error-cooldown-seconds: soon",
            "transient-error-cooldown-seconds must be a whole number, got 'soon'",
        ),
        ("transient-error-cooldown-seconds: 1.5", "transient-error-cooldown-seconds must be a whole number, got 1.5"),
        ("transient-error-cooldown-seconds: true", "transient-error-cooldown-seconds must be a whole number, got true"),
        ("max-retry-credentials: [1]", "max-retry-credentials must be a whole number, got a list"),
        ("max-retry-credentials: '3'", "max-retry-credentials must be a whole number, got '3'"),
        ("max-retry-interval: 30s", "max-retry-interval must be a whole number, got '30s'"),
        ("disable-cooling: 1", "disable-cooling must be true or false, got 1"),
        ("streaming:\n  keepalive-seconds: x", "streaming.keepalive-seconds must be a whole number, got 'x'"),
        ("routing:\n  strategy: weighted-round-robin", "routing.strategy must be round-robin or fill-first"),
    ],
)
def test_a_bad_routing_or_retry_value_names_its_line_and_writes_nothing(db: None, text: str, problem: str) -> None:
    RuntimeSettings.objects.create(pk=1, request_retry=7)
    before = _snapshot()
    full_text = f"request-retry: 2\n{text}\n"

    with pytest.raises(ConfigError) as error:
        import_config(full_text)

    assert str(error.value).startswith(f"line {len(full_text.splitlines())}: {problem}")
    assert _snapshot() == before


def test_settings_that_would_change_nothing_here_are_reported_only_when_switched_on(db: None) -> None:
    off = import_config("passthrough-headers: false\nallow-unauthenticated: false\nnonstream-keepalive-interval: 0\n")
    assert off.warnings == []

    on = import_config("passthrough-headers: true\nallow-unauthenticated: true\nnonstream-keepalive-interval: 5\n")
    assert [w.split(" (")[0] for w in on.warnings] == [
        "line 1: passthrough-headers is not supported by CliRelay",
        "line 2: allow-unauthenticated is not supported by CliRelay",
        "line 3: nonstream-keepalive-interval is not supported by CliRelay",
    ]
    assert all(w.endswith("; ignored") for w in on.warnings)


def test_max_retry_credentials_and_transient_cooldown_are_no_longer_reported_as_unsupported(db: None) -> None:
    report = import_config(
        "max-retry-credentials: 3\ntransient-error-cooldown-seconds: 30\nsave-cooldown-status: true\n"
    )

    runtime = RuntimeSettings.objects.get()
    assert (runtime.max_retry_credentials, runtime.transient_error_cooldown_seconds) == (3, 30)
    assert report.warnings == ["line 3: save-cooldown-status is not supported by CliRelay"]


# --- channel entries: prefix, priority, exclusions, disable-cooling -------------------------------


@pytest.mark.parametrize(
    ("kind", "credential"),
    [
        ("gemini-api-key", "api-key: k"),
        ("interactions-api-key", "api-key: k"),
        ("claude-api-key", "api-key: k"),
        ("codex-api-key", "api-key: k"),
        ("vertex-api-key", "api-key: k"),
        ("openai-compatibility", "api-key-entries: [{api-key: k}]"),
    ],
)
def test_every_channel_kind_keeps_its_routing_fields(db: None, kind: str, credential: str) -> None:
    text = (
        f"{kind}:\n  - name: main\n    {credential}\n    prefix: /pro/\n    priority: -3\n"
        "    excluded-models: [gpt-*, '', '*-mini']\n    disable-cooling: true\n"
    )

    report = import_config(text)

    channel = Channel.objects.get()
    assert (channel.kind, channel.prefix, channel.priority) == (kind, "pro", -3)
    assert channel.excluded_models == ["gpt-*", "*-mini"]
    assert channel.options == {"disable-cooling": True}
    assert report.warnings == []
    assert import_config(text).changes == 0


@pytest.mark.parametrize(
    ("entry", "options"),
    [
        ("disable-cooling: true", {"thinking": "high", "disable-cooling": True}),
        ("disable-cooling: false", {"thinking": "high", "disable-cooling": False}),
        ("name: main", {"thinking": "high"}),  # absent: the reference default, cooling on
    ],
)
def test_disable_cooling_replaces_only_its_own_option(alice: Persona, entry: str, options: dict[str, Any]) -> None:
    Channel.objects.create(
        team=alice.team, kind="gemini-api-key", name="main", options={"thinking": "high", "disable-cooling": True}
    )

    import_config(f"gemini-api-key:\n  - name: main\n    api-key: k\n    {entry}\n", "acme")

    assert Channel.objects.get().options == options


def test_a_channels_disable_cooling_reaches_the_scheduler(db: None) -> None:
    text = (
        "openai-compatibility:\n"
        "  - {name: cool, api-key-entries: [{api-key: a}], models: [{name: m}]}\n"
        "  - {name: hot, api-key-entries: [{api-key: b}], models: [{name: m}], disable-cooling: true}\n"
    )
    import_config(text)

    entries = build_table().entries(Team.objects.get().pk, "m")
    assert {entry.channel.name: entry.channel.disable_cooling for entry in entries} == {"cool": False, "hot": True}


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("prefix: a/b", "gemini-api-key[0].prefix must be one path segment, without '/'"),
        ("priority: high", "gemini-api-key[0].priority must be a whole number, got 'high'"),
        ("excluded-models: gpt-*", "gemini-api-key[0].excluded-models must be a list, got 'gpt-*'"),
        ("disable-cooling: 'yes'", "gemini-api-key[0].disable-cooling must be true or false, got 'yes'"),
    ],
)
def test_a_bad_channel_field_names_its_line(db: None, entry: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"^line 3: {re.escape(problem)}"):
        import_config(f"gemini-api-key:\n  - api-key: k\n    {entry}\n")
    assert not Channel.objects.exists()


def test_a_weight_is_reported_as_not_supported_wherever_it_is_given(db: None) -> None:
    report = import_config(
        "gemini-api-key:\n  - api-key: k\n    weight: 3\n"
        "openai-compatibility:\n  - name: o\n    base-url: http://127.0.0.1:9/v1\n"
        "    api-key-entries:\n      - api-key: a\n        weight: 2\n"
    )

    assert Channel.objects.count() == 2
    reason = "is not supported: priority orders channels and weighs them inside groups"
    assert report.warnings == [
        f"line 3: gemini-api-key[0].weight {reason}",
        f"line 9: openai-compatibility[0].api-key-entries[0].weight {reason}",
    ]


def test_force_model_prefix_hides_the_bare_names_of_prefixed_channels(db: None) -> None:
    channels = (
        "openai-compatibility:\n  - {name: a, prefix: pro, api-key-entries: [{api-key: a}], models: [{name: m}]}\n"
    )
    team_models = {}
    for flag in ("false", "true"):
        import_config(f"force-model-prefix: {flag}\n{channels}")
        team_models[flag] = sorted(build_table().models[Team.objects.get().pk])

    assert team_models == {"false": ["m", "pro/m"], "true": ["pro/m"]}


# --- routing groups, path routes and key scopes ------------------------------------------------


def test_a_group_collects_the_channels_its_match_rules_name(db: None) -> None:
    text = (
        "gemini-api-key:\n  - {name: Paid, api-key: a, prefix: Pro}\n  - {name: Main, api-key: b}\n"
        "  - {name: other, api-key: c, prefix: free}\n"
        "routing:\n  channel-groups:\n"
        "    - {name: Pro Tier, priority: 7, description: Paid, match: {prefixes: [/pro/], channels: [main]}}\n"
        "    - {name: empty, match: {prefixes: [nothing]}}\n"
    )

    report = import_config(text)

    group = ChannelGroup.objects.get(slug="pro-tier")
    assert (group.name, group.priority, group.description) == ("Pro Tier", 7, "Paid")
    assert (group.match_prefixes, group.match_channels) == (["pro"], ["main"])
    assert sorted(group.channels.values_list("name", flat=True)) == ["Main", "Paid"]
    assert ChannelGroup.objects.get(slug="empty").priority == 0
    assert report.warnings == ["line 8: routing group 'empty' matches no channel"]
    assert import_config(text).changes == 0


@pytest.mark.parametrize(
    ("given", "stored"),
    [("", ""), ("strategy: weighted", ""), ("strategy: FF", "fill-first"), ("strategy: rr", "round-robin")],
)
def test_a_group_may_choose_its_own_strategy(db: None, given: str, stored: str) -> None:
    import_config(f"routing:\n  channel-groups:\n    - name: pro\n      {given}\n")
    assert ChannelGroup.objects.get().strategy == stored


def test_an_unknown_group_strategy_names_its_line(db: None) -> None:
    with pytest.raises(ConfigError, match=r"^line 4: routing\.channel-groups\[0\]\.strategy must be weighted, round"):
        import_config("routing:\n  channel-groups:\n    - name: pro\n      strategy: random\n")
    assert not ChannelGroup.objects.exists()


@pytest.mark.parametrize(
    ("route", "stored"),
    [
        ("{path: /pro, group: pro}", ("/pro", True, "none")),
        ("{path: pro/, group: PRO, strip-prefix: false}", ("/pro", False, "none")),
        ("{path: 'https://host/pro/x', group: pro, fallback: DEFAULT}", ("/pro/x", True, "default")),
        ("{path: /pro, group: pro, fallback: none}", ("/pro", True, "none")),
    ],
)
def test_path_routes_keep_strip_prefix_and_fallback(db: None, route: str, stored: tuple[Any, ...]) -> None:
    import_config(f"routing:\n  channel-groups: [{{name: pro}}]\n  path-routes:\n    - {route}\n")

    assert PathRoute.objects.values_list("path", "strip_prefix", "fallback").get() == stored
    assert PathRoute.objects.get().group.name == "pro"


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        ("{path: /pro, group: pro, fallback: other}", r"routing\.path-routes\[0\]\.fallback must be none or default"),
        ("{path: /pro, group: pro, strip-prefix: 'no'}", r"routing\.path-routes\[0\]\.strip-prefix must be true or"),
        ("{path: /p r, group: pro}", r"routing\.path-routes\[0\]\.path must be a path such as /pro"),
    ],
)
def test_a_bad_path_route_names_its_line(db: None, route: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"^line 4: {problem}"):
        import_config(f"routing:\n  channel-groups: [{{name: pro}}]\n  path-routes:\n    - {route}\n")
    assert not PathRoute.objects.exists()


def test_a_path_route_to_an_unknown_group_is_reported_and_skipped(db: None) -> None:
    report = import_config("routing:\n  path-routes:\n    - {path: /pro, group: nowhere}\n")

    assert not PathRoute.objects.exists()
    assert report.warnings == ["line 3: routing.path-routes[0].group: no routing group named 'nowhere'"]


def test_a_key_scoped_to_existing_groups_and_channels_stays_enabled(db: None) -> None:
    text = (
        "codex-api-key: [{name: Team A Codex, api-key: c}, {name: spare, api-key: d}]\n"
        "routing:\n  channel-groups: [{name: pro, match: {channels: [spare]}}]\n"
        "api-key-entries:\n"
        "  - {key: sk-a, name: A, allowed-channel-groups: [PRO], allowed-channels: [team a codex, gone]}\n"
        "  - {key: sk-b, name: B, allowed-channel-groups: [], allowed-channels: []}\n"
    )

    report = import_config(text)

    scoped, open_key = ApiKey.objects.get(name="A"), ApiKey.objects.get(name="B")
    assert scoped.enabled and open_key.enabled
    assert list(scoped.allowed_channel_groups.values_list("name", flat=True)) == ["pro"]
    assert list(scoped.allowed_channels.values_list("name", flat=True)) == ["Team A Codex"]
    assert not open_key.allowed_channel_groups.exists() and not open_key.allowed_channels.exists()
    assert report.warnings == ["line 5: api-key-entries[0].allowed-channels[1]: no channel named 'gone'"]
    assert import_config(text).changes == 0


# --- payload rules -----------------------------------------------------------------------------


def test_payload_rules_are_stored_as_written_and_a_new_payload_replaces_the_old(db: None) -> None:
    first = "payload:\n  default:\n    - {models: [{name: 'gemini-*'}], params: {a.b: 1}}\n  filter: []\n"
    second = "payload:\n  filter:\n    - {models: [{name: m, protocol: openai}], params: [x, y]}\n"

    import_config(first)
    after_first = RuntimeSettings.objects.get().payload_rules
    import_config(second)

    assert after_first == {"default": [{"models": [{"name": "gemini-*"}], "params": {"a.b": 1}}], "filter": []}
    assert RuntimeSettings.objects.get().payload_rules == {
        "filter": [{"models": [{"name": "m", "protocol": "openai"}], "params": ["x", "y"]}]
    }


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            "default:\n    - {models: [{protocol: gemini}], params: {a: 1}}",
            r"3: payload\.default\[0\]\.models needs a name",
        ),
        ("filter:\n    - {models: [{name: m}], params: {a: 1}}", r"3: payload\.filter\[0\]\.params must be a list"),
        ("override: {models: []}", r"2: payload\.override must be a list"),
    ],
)
def test_a_bad_payload_rule_names_its_line(db: None, section: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"^line {problem}"):
        import_config(f"payload:\n  {section}\n")
    assert not RuntimeSettings.objects.exists()
