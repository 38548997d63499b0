"""Import a CliRelay / CLIProxyAPI ``config.yaml``: ``import_config(text, team_slug)``.

Everything lands in one team, in one transaction, so a file either imports whole or not at
all: client API keys (stored hashed), channels of every API-key kind, routing groups, path
routes, the proxy pool, and the global runtime and log storage settings.

Importing is idempotent. Rows are matched (keys by hash, channels and groups by name, routes
by path, proxies by name) and saved only when a value differs, so a second run reports no
change and leaves ``updated_at`` alone. A section the file leaves out leaves the database as
it is; a section or list entry the file contains is imported whole, its missing fields taking
the reference defaults. Rows the file does not mention are never deleted, except the extra
keys of an OpenAI-compatible channel, which are replaced by the file's list.

Unnamed channels are named by kind and position (``gemini-api-key-2``): name them in the file
to keep them stable when entries are reordered. JSON fields (``Channel.options``, payload
rules, OAuth aliases) keep config.yaml's own key names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils.text import slugify

from accounts.keys import hash_key
from accounts.models import ApiKey, ChannelGroup, PathRoute, Team
from channels_app.config_document import ConfigDocument, ConfigError, Value
from channels_app.config_notes import (
    CLOAK_NOTES,
    GROUP_NOTES,
    ROUTING_NOTES,
    TOP_LEVEL_KEYS,
    TOP_LEVEL_NOTES,
    Notes,
)
from channels_app.models import (
    Channel,
    ChannelKey,
    ProviderKind,
    ProxyEntry,
    RuntimeSettings,
    validate_proxy_url,
)
from usage.models import LogStorageSettings

__all__ = ["ConfigError", "ImportReport", "import_config"]

Outcome = Literal["created", "updated", "unchanged", "deleted"]

KEY_CHANNEL_KINDS = (
    ProviderKind.GEMINI_API_KEY,
    ProviderKind.INTERACTIONS_API_KEY,
    ProviderKind.CLAUDE_API_KEY,
    ProviderKind.CODEX_API_KEY,
    ProviderKind.VERTEX_API_KEY,
)
OAUTH_KINDS = frozenset(
    kind.value for kind in ProviderKind if not kind.value.endswith("-api-key") and kind != "openai-compatibility"
)
_CHANNEL_KEYS = {"api-key", "name", "priority", "weight", "prefix", "base-url", "proxy-url", "proxy-id"}
_CHANNEL_KEYS |= {"models", "headers", "excluded-models"}
_COMPAT_KEYS = {"name", "priority", "weight", "prefix", "base-url", "headers", "models", "excluded-models"}
_COMPAT_KEYS |= {"api-key-entries", "api-keys"}
_OPTION_KEYS: dict[str, tuple[str, ...]] = {
    ProviderKind.CLAUDE_API_KEY: ("cloak", "skip-anthropic-processing"),
    ProviderKind.CODEX_API_KEY: ("websockets",),
}
_MANAGED_OPTIONS = {key for keys in _OPTION_KEYS.values() for key in keys}
_KEY_ENTRY_KEYS = {"key", "name", "disabled", "daily-limit", "total-quota", "spending-limit", "concurrency-limit"}
_KEY_ENTRY_KEYS |= {"rpm-limit", "tpm-limit", "allowed-models", "allowed-channels", "allowed-channel-groups"}
_KEY_ENTRY_KEYS |= {"system-prompt", "created-at", "updated-at"}
_STRATEGIES = {"round-robin": "round-robin", "roundrobin": "round-robin", "rr": "round-robin"}
_STRATEGIES |= {"fill-first": "fill-first", "fillfirst": "fill-first", "ff": "fill-first"}
_RUNTIME_SCALARS = (
    ("proxy-url", "proxy_url", "proxy"),
    ("request-retry", "request_retry", "count"),
    ("max-retry-interval", "max_retry_interval", "count"),
    ("force-model-prefix", "force_model_prefix", "flag"),
    ("disable-cooling", "disable_cooling", "flag"),
    ("passthrough-headers", "passthrough_headers", "flag"),
    ("allow-unauthenticated", "allow_unauthenticated", "flag"),
    ("nonstream-keepalive-interval", "nonstream_keepalive_interval", "count"),
)
_PAYLOAD_SECTIONS = ("default", "default-raw", "override", "override-raw", "filter")
_LOG_DEFAULTS = {"store-content": True, "content-retention-days": 30, "cleanup-interval-minutes": 1440}
_LOG_DEFAULTS |= {"max-total-size-mb": 1024, "vacuum-on-cleanup": True}
# §2.2: paths the gateway itself serves, plus our admin and lookup page.
_RESERVED_PATHS = {"/v1", "/v1beta", "/v0", "/api", "/manage", "/auth", "/anthropic", "/codex", "/google"}
_RESERVED_PATHS |= {"/iflow", "/antigravity", "/admin", "/lookup"}
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_LABELS = ("API keys", "channels", "extra channel keys", "routing groups", "path routes", "proxies")
_LABELS += ("runtime settings", "log storage settings")


@dataclass
class Tally:
    """How many rows of one type an import created, updated, left alone or deleted."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


@dataclass
class ImportReport:
    """What an import did: counts per object type, and what it could not use."""

    tallies: dict[str, Tally] = field(default_factory=lambda: {label: Tally() for label in _LABELS})
    warnings: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return sum(t.created + t.updated + t.deleted for t in self.tallies.values())

    def count(self, label: str, outcome: Outcome, number: int = 1) -> None:
        tally = self.tallies.setdefault(label, Tally())
        setattr(tally, outcome, getattr(tally, outcome) + number)

    def summary(self) -> list[str]:
        """The report as lines of text: counts, then ignored keys, then warnings."""
        lines = []
        for label, t in self.tallies.items():
            deleted = f", {t.deleted} deleted" if t.deleted else ""
            lines.append(f"{label}: {t.created} created, {t.updated} updated, {t.unchanged} unchanged{deleted}")
        if self.ignored:
            lines += ["Ignored (no meaning in CliRelay):", *(f"  {line}" for line in self.ignored)]
        if self.warnings:
            lines += ["Warnings:", *(f"  {line}" for line in self.warnings)]
        return lines


def import_config(text: str, team_slug: str = "default") -> ImportReport:
    """Import config.yaml ``text`` into one team; on ``ConfigError`` nothing is written."""
    document = ConfigDocument(text)
    report = ImportReport()
    with transaction.atomic():
        team = Team.objects.filter(slug=team_slug).first()
        if team is None:
            if team_slug != "default":
                raise ConfigError(f"there is no team with slug '{team_slug}'")
            team = Team.objects.create(name="Default", slug="default")
            report.count("teams", "created")
        _Importer(document, team, report).run()
    return report


class _Importer:
    """One import run: reads the document section by section and writes rows of one team."""

    def __init__(self, document: ConfigDocument, team: Team, report: ImportReport) -> None:
        self.root = document.root
        self.team = team
        self.report = report
        self.proxies: dict[str, ProxyEntry] = {}
        self.channel_names: dict[str, int] = {}
        self.key_names: set[str] = set()
        self.key_number = 0

    def run(self) -> None:
        self._check_keys(self.root, TOP_LEVEL_KEYS, TOP_LEVEL_NOTES)
        self._import_proxy_pool(self.root["proxy-pool"])
        for kind in KEY_CHANNEL_KINDS:
            for index, entry in enumerate(self.root[kind].items()):
                self._import_key_channel(kind, index, entry)
        for index, entry in enumerate(self.root["openai-compatibility"].items()):
            self._import_compat_channel(index, entry)
        self._import_groups(self.root["routing"]["channel-groups"])
        self._import_path_routes(self.root["routing"]["path-routes"])
        self._import_api_keys()
        self._import_runtime_settings()
        self._import_log_storage(self.root["request-log-storage"])

    # --- reporting and saving -----------------------------------------------------------------

    def _warn(self, where: Value, message: str) -> None:
        self.report.warnings.append(f"line {where.line}: {message}")

    def _check_keys(self, value: Value, known: Iterable[str], notes: Notes | None = None) -> None:
        """Report each key of ``value`` that is not imported: ignored, unsupported or unknown."""
        known, notes = set(known), notes or {}
        for key, child in value.entries():
            note = notes.get(key)
            if key in known:
                continue
            if isinstance(note, Mapping):
                self._check_keys(child, (), note)
            elif note and note.startswith("ignored: "):
                self.report.ignored.append(f"line {child.line}: {child.name}: {note}")
            elif note:
                self._warn(child, f"{child.name} {note}")
            else:
                self._warn(child, f"unknown key: {child.name}")

    def _count(self, value: Value, default: int = 0) -> int:
        """A whole number of at least 0; negative values mean "off" in the reference."""
        number = value.integer(default)
        if number < 0:
            self._warn(value, f"{value.name} is negative; stored as 0")
            return 0
        return number

    def _proxy_url(self, value: Value) -> str:
        url = value.text()
        try:
            validate_proxy_url(url)
        except ValidationError as exc:
            raise value.error(f"is not a proxy URL: {' '.join(exc.messages)}") from exc
        return url

    def _save(
        self,
        label: str,
        obj: models.Model,
        values: dict[str, Any],
        where: Value,
        m2m: dict[str, list[int]] | None = None,
    ) -> None:
        """Write ``values`` (and many-to-many ids) onto ``obj``, saving only what differs."""
        outcome = _write(obj, values, where)
        for attribute, ids in (m2m or {}).items():
            manager = getattr(obj, attribute)
            if set(manager.values_list("pk", flat=True)) != set(ids):
                manager.set(ids)
                if outcome == "unchanged":
                    outcome = "updated"
                    if stamps := _auto_now_fields(obj):
                        obj.save(update_fields=stamps)
        self.report.count(label, outcome)

    # --- proxy pool and channels --------------------------------------------------------------

    def _import_proxy_pool(self, value: Value) -> None:
        for item in value.items():
            self._check_keys(item, ("id", "name", "url", "enabled", "description"))
            url = item["url"].text()
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https", "socks5") or not parts.hostname:
                self._warn(item, f"{item.name} dropped: url must be an http, https or socks5 URL with a host")
                continue
            pool_id = _pool_id(item["id"].text()) or "proxy-" + hashlib.sha1(url.encode()).hexdigest()[:10]
            if pool_id in self.proxies:
                self._warn(item, f"{item.name} dropped: the id '{pool_id}' is used by an earlier entry")
                continue
            name = item["name"].text() or pool_id
            proxy = ProxyEntry.objects.filter(name=name).first() or ProxyEntry()
            values = {"name": name, "url": url, "enabled": item["enabled"].flag(True)}
            self._save("proxies", proxy, {**values, "description": item["description"].text()}, item)
            self.proxies[pool_id] = proxy

    def _pool_proxy(self, value: Value) -> int | None:
        """The pool entry a ``proxy-id`` names; a missing one falls back to proxy-url, as in the reference."""
        wanted = value.text()
        if not wanted:
            return None
        proxy = self.proxies.get(_pool_id(wanted)) or ProxyEntry.objects.filter(name__iexact=wanted).first()
        if proxy is None:
            self._warn(value, f"{value.name}: no proxy '{wanted}' in the proxy pool; proxy-url applies instead")
            return None
        return proxy.pk

    def _channel_name(self, kind: str, index: int, entry: Value) -> str:
        """The channel's name: its ``name``, else kind and position; unique within the file."""
        name = entry["name"].text() or f"{kind}-{index + 1}"
        if name.lower() in self.channel_names:
            earlier = self.channel_names[name.lower()]
            raise entry.error(f"is named '{name}', the name of the channel on line {earlier}")
        self.channel_names[name.lower()] = entry.line
        return name

    def _channel_values(self, kind: str, name: str, entry: Value) -> dict[str, Any]:
        """The fields every API-key channel kind shares."""
        prefix = entry["prefix"].text().strip("/")
        if "/" in prefix:
            raise entry["prefix"].error("must be one path segment, without '/'")
        return {
            "kind": kind,
            "name": name,
            "base_url": entry["base-url"].text(),
            "headers": entry["headers"].text_map(),
            "served_models": [self._model(item) for item in entry["models"].items()],
            "excluded_models": entry["excluded-models"].strings(),
            "prefix": prefix,
            "priority": entry["priority"].integer(),
            "weight": self._count(entry["weight"], 1),
        }

    def _model(self, item: Value) -> dict[str, Any]:
        name = item["name"].text()
        if not name:
            raise item.error("needs a name (the upstream model)")
        return {**item.plain(), "name": name, "alias": item["alias"].text()}

    def _find_channel(self, name: str) -> Channel:
        return Channel.objects.filter(team=self.team, name__iexact=name).first() or Channel(team=self.team)

    def _import_key_channel(self, kind: str, index: int, entry: Value) -> None:
        extras = _OPTION_KEYS.get(kind, ())
        self._check_keys(entry, _CHANNEL_KEYS | set(extras))
        name = self._channel_name(kind, index, entry)
        if not entry["api-key"].text():
            self._warn(entry, f"{entry.name} has no api-key; skipped")
            return
        values = self._channel_values(kind, name, entry)
        values["secret"] = entry["api-key"].text()
        values["proxy_url"] = self._proxy_url(entry["proxy-url"])
        values["proxy_id"] = self._pool_proxy(entry["proxy-id"])
        channel = self._find_channel(name)
        options = {key: value for key, value in channel.options.items() if key not in _MANAGED_OPTIONS}
        for key in extras:
            if entry[key].present:
                options[key] = self._cloak(entry[key]) if key == "cloak" else entry[key].flag()
        self._save("channels", channel, {**values, "options": options}, entry)

    def _cloak(self, value: Value) -> dict[str, Any]:
        self._check_keys(value, ("mode", "strict-mode", "cache-user-id"), CLOAK_NOTES)
        mode = (value["mode"].text() or "auto").lower()
        if mode not in ("auto", "always", "never"):
            raise value["mode"].error("must be auto, always or never")
        return {"mode": mode, "strict-mode": value["strict-mode"].flag(), "cache-user-id": value["cache-user-id"].flag()}

    def _import_compat_channel(self, index: int, entry: Value) -> None:
        self._check_keys(entry, _COMPAT_KEYS)
        name = self._channel_name(ProviderKind.OPENAI_COMPATIBILITY, index, entry)
        values = self._channel_values(ProviderKind.OPENAI_COMPATIBILITY, name, entry)
        credentials: list[tuple[str, str, Value]] = []
        for position, item in enumerate(entry["api-key-entries"].items()):
            self._check_keys(item, ("api-key", "proxy-url", "proxy-id"))
            if position == 0:
                values["proxy_id"] = self._pool_proxy(item["proxy-id"])
            elif item["proxy-id"].present:
                self._warn(item, f"{item.name}.proxy-id: extra keys cannot use the proxy pool; set proxy-url")
            credentials.append((item["api-key"].text(), self._proxy_url(item["proxy-url"]), item))
        # Older files list bare keys under api-keys.
        credentials += [(item.text(), "", item) for item in entry["api-keys"].items()]
        first = credentials[0] if credentials else ("", "", entry)
        values |= {"secret": first[0], "proxy_url": first[1]}
        values.setdefault("proxy_id", None)
        channel = self._find_channel(name)
        self._save("channels", channel, values, entry)
        self._replace_extra_keys(channel, credentials[1:])

    def _replace_extra_keys(self, channel: Channel, credentials: list[tuple[str, str, Value]]) -> None:
        """Make the channel's extra keys equal the file's list, replacing them all when they differ."""
        wanted = [(secret, proxy_url) for secret, proxy_url, _ in credentials]
        current = [(key.secret, key.proxy_url) for key in channel.extra_keys.all()]
        if current == wanted:
            self.report.count("extra channel keys", "unchanged", len(wanted))
            return
        channel.extra_keys.all().delete()
        self.report.count("extra channel keys", "deleted", len(current))
        for secret, proxy_url, where in credentials:
            self._save("extra channel keys", ChannelKey(channel=channel), {"secret": secret, "proxy_url": proxy_url}, where)

    # --- routing groups and path routes -------------------------------------------------------

    def _import_groups(self, value: Value) -> None:
        names: set[str] = set()
        for item in value.items():
            self._check_keys(item, ("name", "description", "priority", "match"), GROUP_NOTES)
            name = item["name"].text()
            if not slugify(name):
                raise item["name"].error("must be a name with at least one letter or digit")
            if name.lower() in names:
                raise item["name"].error(f"'{name}' names an earlier group too")
            names.add(name.lower())
            match = item["match"]
            self._check_keys(match, ("prefixes", "channels"))
            prefixes = [prefix.strip("/").lower() for prefix in match["prefixes"].strings()]
            channels = match["channels"].strings()
            values = {"name": name, "slug": slugify(name), "description": item["description"].text()}
            values |= {"priority": item["priority"].integer(), "match_prefixes": prefixes, "match_channels": channels}
            group = self._find_group(name) or ChannelGroup(team=self.team)
            members = self._members(prefixes, channels)
            self._save("routing groups", group, values, item, m2m={"channels": members})
            if not members:
                self._warn(item, f"routing group '{name}' matches no channel")

    def _find_group(self, name: str) -> ChannelGroup | None:
        groups = ChannelGroup.objects.filter(team=self.team)
        return groups.filter(name__iexact=name).first() or groups.filter(slug=slugify(name)).first()

    def _members(self, prefixes: list[str], names: list[str]) -> list[int]:
        """Ids of the team's channels whose prefix or name (case-insensitive) is listed."""
        wanted = {name.lower() for name in names}
        rows = Channel.objects.filter(team=self.team).values_list("pk", "prefix", "name")
        return [pk for pk, prefix, name in rows if (prefix and prefix.lower() in prefixes) or name.lower() in wanted]

    def _resolve_group(self, value: Value) -> ChannelGroup | None:
        """The team's group named by ``value``, else the implicit group of a channel prefix."""
        name = value.text()
        group = self._find_group(name)
        if group is None and (members := self._members([name.strip("/").lower()], [])):
            prefix = name.strip("/").lower()
            group = ChannelGroup(team=self.team)
            values = {"name": prefix, "slug": slugify(prefix), "match_prefixes": [prefix]}
            values["description"] = f"The channels with prefix '{prefix}' (an implicit group in CliRelay)."
            self._save("routing groups", group, values, value, m2m={"channels": members})
            self._warn(value, f"created routing group '{prefix}' for the channels with that prefix")
        if group is None:
            self._warn(value, f"{value.name}: no routing group named '{name}'")
        return group

    def _import_path_routes(self, value: Value) -> None:
        paths: set[str] = set()
        for item in value.items():
            self._check_keys(item, ("path", "group", "strip-prefix", "fallback"))
            path = _route_path(item["path"])
            if path in paths:
                raise item["path"].error(f"{path} is routed by an earlier entry too")
            paths.add(path)
            fallback = (item["fallback"].text() or "none").lower()
            if fallback not in PathRoute.Fallback.values:
                raise item["fallback"].error("must be none or default")
            group = self._resolve_group(item["group"])
            if group is None:
                continue
            route = PathRoute.objects.filter(team=self.team, path=path).first() or PathRoute(team=self.team)
            values = {"path": path, "group_id": group.pk, "strip_prefix": item["strip-prefix"].flag(True)}
            self._save("path routes", route, {**values, "fallback": fallback}, item)

    # --- client API keys ----------------------------------------------------------------------

    def _import_api_keys(self) -> None:
        entries = self.root["api-key-entries"].items()
        plain = self.root["api-keys"].items()
        self.key_names = {name.lower() for name in ApiKey.objects.filter(team=self.team).values_list("name", flat=True)}
        self.key_names |= {entry["name"].text().lower() for entry in entries}
        seen: set[str] = set()
        for entry in entries:
            self._check_keys(entry, _KEY_ENTRY_KEYS)
            key = self._find_key(entry["key"], seen)
            if key is not None:
                groups, channels, scoped = self._key_scope(entry)
                values = self._key_values(entry, key)
                values["enabled"] = values["enabled"] and scoped
                m2m = {"allowed_channel_groups": groups, "allowed_channels": channels}
                self._save("API keys", key, values, entry, m2m=m2m)
        for item in plain:
            key = self._find_key(item, seen)
            if key is not None and key.pk is not None:
                self.report.count("API keys", "unchanged")
            elif key is not None:
                self._save("API keys", key, {"name": self._next_key_name()}, item)

    def _find_key(self, value: Value, seen: set[str]) -> ApiKey | None:
        """The row for the key in ``value`` (new and unsaved if unknown); None to skip it."""
        raw = value.text()
        if not raw:
            self._warn(value, f"{value.name} is empty; skipped")
            return None
        digest = hash_key(raw)
        if digest in seen:
            self._warn(value, f"{value.name} repeats an earlier key; the first one is imported")
            return None
        seen.add(digest)
        key = ApiKey.objects.filter(key_hash=digest).first()
        if key is not None and key.team_id != self.team.pk:
            raise value.error("is already a key of another team")
        if key is None:
            key = ApiKey(team=self.team)
            key.set_key(raw)
        return key

    def _next_key_name(self) -> str:
        """The next free ``api-key-N`` of the team, for keys the file leaves unnamed."""
        while True:
            self.key_number += 1
            name = f"api-key-{self.key_number}"
            if name not in self.key_names:
                self.key_names.add(name)
                return name

    def _key_values(self, entry: Value, key: ApiKey) -> dict[str, Any]:
        name = entry["name"].text() or (key.name if key.pk else self._next_key_name())
        if ApiKey.objects.filter(team=self.team, name=name).exclude(pk=key.pk).exists():
            raise entry["name"].error(f"'{name}' is the name of another key of the team")
        values: dict[str, Any] = {
            "name": name,
            "enabled": not entry["disabled"].flag(),
            "daily_request_limit": self._count(entry["daily-limit"]),
            "total_request_limit": self._count(entry["total-quota"]),
            "spending_limit_usd": max(entry["spending-limit"].decimal(), Decimal(0)),
            "concurrency_limit": self._count(entry["concurrency-limit"]),
            "rpm_limit": self._count(entry["rpm-limit"]),
            "tpm_limit": self._count(entry["tpm-limit"]),
            "allowed_models": entry["allowed-models"].strings(),
            "system_prompt": entry["system-prompt"].text(),
        }
        if created_at := entry["created-at"].moment():
            values["created_at"] = created_at
        return values

    def _key_scope(self, entry: Value) -> tuple[list[int], list[int], bool]:
        """Allowed group and channel ids, and whether every restriction the file gives still restricts."""
        wanted_groups = [item for item in entry["allowed-channel-groups"].items() if item.text()]
        wanted_channels = [item for item in entry["allowed-channels"].items() if item.text()]
        groups = [group.pk for item in wanted_groups if (group := self._resolve_group(item))]
        channels = []
        for item in wanted_channels:
            channel = Channel.objects.filter(team=self.team, name__iexact=item.text()).only("pk").first()
            if channel is None:
                self._warn(item, f"{item.name}: no channel named '{item.text()}'")
            else:
                channels.append(channel.pk)
        scoped = (bool(groups) or not wanted_groups) and (bool(channels) or not wanted_channels)
        if not scoped:
            # An empty list allows everything: disabling is the only way to keep the key narrow.
            self._warn(entry, f"{entry.name} is disabled: none of its allowed channels or groups exist")
        return groups, channels, scoped

    # --- global settings ----------------------------------------------------------------------

    def _import_runtime_settings(self) -> None:
        values: dict[str, Any] = {}
        for key, field_name, kind in _RUNTIME_SCALARS:
            value = self.root[key]
            if value.present:
                reads = {"proxy": self._proxy_url, "count": self._count, "flag": Value.flag}
                values[field_name] = reads[kind](value)
        if (streaming := self.root["streaming"]).present:
            self._check_keys(streaming, ("keepalive-seconds", "bootstrap-retries"))
            values["streaming_keepalive_seconds"] = self._count(streaming["keepalive-seconds"])
            values["streaming_bootstrap_retries"] = self._count(streaming["bootstrap-retries"])
        if (routing := self.root["routing"]).present:
            self._check_keys(routing, ("strategy", "include-default-group", "channel-groups", "path-routes"), ROUTING_NOTES)
            values["routing_strategy"] = _strategy(routing["strategy"])
            values["include_default_group"] = routing["include-default-group"].flag(True)
        if self.root["oauth-model-alias"].present:
            values["oauth_model_alias"] = self._oauth_map(self.root["oauth-model-alias"], self._aliases)
        if self.root["oauth-excluded-models"].present:
            values["oauth_excluded_models"] = self._oauth_map(self.root["oauth-excluded-models"], Value.strings)
        if self.root["payload"].present:
            values["payload_rules"] = self._payload(self.root["payload"])
        if values:
            settings = RuntimeSettings.objects.filter(pk=1).first() or RuntimeSettings(pk=1)
            self._save("runtime settings", settings, values, self.root)

    def _oauth_map(self, value: Value, read: Any) -> dict[str, Any]:
        """A mapping of OAuth channel kind to what ``read`` makes of its list."""
        result = {}
        for kind, item in value.entries():
            if kind.lower() not in OAUTH_KINDS:
                self._warn(item, f"unknown key: {item.name} (not an OAuth channel kind)")
                continue
            result[kind.lower()] = read(item)
        return result

    def _aliases(self, value: Value) -> list[dict[str, Any]]:
        aliases = []
        for item in value.items():
            name, alias = item["name"].text(), item["alias"].text()
            if not name or not alias:
                raise item.error("needs both name and alias")
            aliases.append({**item.plain(), "name": name, "alias": alias})
        return aliases

    def _payload(self, value: Value) -> dict[str, Any]:
        """The payload rules, checked: models named, raw parameter values valid JSON."""
        self._check_keys(value, _PAYLOAD_SECTIONS)
        rules = {}
        for section in _PAYLOAD_SECTIONS:
            for rule in value[section].items():
                if not all(model["name"].text() for model in rule["models"].items()):
                    raise rule["models"].error("needs a name in every entry")
                if section == "filter":
                    rule["params"].strings()
                    continue
                for _, param in rule["params"].entries():
                    if section.endswith("-raw") and isinstance(param.raw, str) and not _is_json(param.raw):
                        raise param.error("must be valid JSON (raw rules insert it as is)")
            if value[section].present:
                rules[section] = value[section].plain()
        return rules

    def _import_log_storage(self, value: Value) -> None:
        """``request-log-storage``, normalised as the reference does (§5.3)."""
        if not value.present:
            return
        self._check_keys(value, _LOG_DEFAULTS)
        read = {key: (value[key].flag(d) if isinstance(d, bool) else value[key].integer(d)) for key, d in _LOG_DEFAULTS.items()}
        if not any(read.values()):
            read = dict(_LOG_DEFAULTS)
        values = {
            "store_content": read["store-content"],
            "content_retention_days": max(read["content-retention-days"], 0),
            "cleanup_interval_minutes": read["cleanup-interval-minutes"] if read["cleanup-interval-minutes"] > 0 else 1440,
            "max_total_size_mb": max(read["max-total-size-mb"], 0),
            "vacuum_on_cleanup": read["vacuum-on-cleanup"],
        }
        settings = LogStorageSettings.objects.filter(pk=1).first() or LogStorageSettings(pk=1)
        self._save("log storage settings", settings, values, value)


def _write(obj: models.Model, values: dict[str, Any], where: Value) -> Outcome:
    """Set ``values`` on ``obj`` and save it if it is new or any value differs."""
    adding = obj._state.adding
    changed = [name for name, value in values.items() if adding or getattr(obj, name) != value]
    if not adding and not changed:
        return "unchanged"
    for name in changed:
        setattr(obj, name, values[name])
    try:
        obj.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in exc.message_dict.items())
        raise where.error(f"cannot be stored: {problems}") from exc
    if adding:
        obj.save()
        return "created"
    obj.save(update_fields=[*changed, *_auto_now_fields(obj)])
    return "updated"


def _auto_now_fields(obj: models.Model) -> list[str]:
    return [f.name for f in obj._meta.concrete_fields if getattr(f, "auto_now", False)]


def _pool_id(raw: str) -> str:
    """A proxy-pool id as the reference normalises it: lower case, other runs of characters as '-'."""
    return re.sub(r"[^a-z0-9]+", "-", raw.strip().lower())


def _route_path(value: Value) -> str:
    """A path route's path, normalised: ``pro``, ``/pro/`` and ``https://host/pro`` are ``/pro``."""
    raw = value.text()
    segments = [s for s in (urlsplit(raw).path if "://" in raw else raw).split("/") if s]
    if not segments or not all(_PATH_SEGMENT.fullmatch(s) for s in segments):
        raise value.error("must be a path such as /pro (letters, digits, '_' and '-' only)")
    path = "/" + "/".join(segments)
    if path.lower() in _RESERVED_PATHS:
        raise value.error(f"{path} is reserved for CliRelay's own routes")
    return path


def _strategy(value: Value) -> str:
    text = (value.text() or "round-robin").lower()
    if text not in _STRATEGIES:
        raise value.error(f"must be round-robin or fill-first, got '{text}'")
    return _STRATEGIES[text]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
