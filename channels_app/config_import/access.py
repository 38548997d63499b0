"""Who may reach what: routing groups, path routes and client API keys (``routing``, ``api-key*``)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from django.utils.text import slugify

from accounts.keys import hash_key
from accounts.models import ApiKey, ChannelGroup, PathRoute
from channels_app.config_import.document import Value
from channels_app.config_import.notes import GROUP_NOTES
from channels_app.config_import.run import ImportRun
from channels_app.config_import.runtime import STRATEGIES
from channels_app.models import Channel

_KEY_ENTRY_KEYS = {"key", "name", "disabled", "daily-limit", "total-quota", "spending-limit", "concurrency-limit"}
_KEY_ENTRY_KEYS |= {"rpm-limit", "tpm-limit", "allowed-models", "allowed-channels", "allowed-channel-groups"}
_KEY_ENTRY_KEYS |= {"system-prompt", "created-at", "updated-at"}
# §2.2: paths the gateway itself serves, plus our admin and lookup page.
_RESERVED_PATHS = {"/v1", "/v1beta", "/v0", "/api", "/manage", "/auth", "/anthropic", "/codex", "/google"}
_RESERVED_PATHS |= {"/iflow", "/antigravity", "/admin", "/lookup"}
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def import_groups(run: ImportRun, value: Value) -> None:
    """``routing.channel-groups``, each joined by the team's channels that match it."""
    names: set[str] = set()
    for item in value.items():
        run.check_keys(item, ("name", "description", "priority", "strategy", "match"), GROUP_NOTES)
        name = item["name"].text()
        if not slugify(name):
            raise item["name"].error("must be a name with at least one letter or digit")
        if name.lower() in names:
            raise item["name"].error(f"'{name}' names an earlier group too")
        names.add(name.lower())
        match = item["match"]
        run.check_keys(match, ("prefixes", "channels"))
        prefixes = [prefix.strip("/").lower() for prefix in match["prefixes"].strings()]
        channels = match["channels"].strings()
        values: dict[str, Any] = {"name": name, "slug": slugify(name), "description": item["description"].text()}
        values |= {"priority": item["priority"].integer(), "match_prefixes": prefixes, "match_channels": channels}
        values["strategy"] = _group_strategy(item["strategy"])
        group = _find_group(run, name) or ChannelGroup(team=run.team)
        members = _members(run, prefixes, channels)
        run.save("routing groups", group, values, item, m2m={"channels": members})
        if not members:
            run.warn(item, f"routing group '{name}' matches no channel")


def _group_strategy(value: Value) -> str:
    """A group's own strategy (CliRelay's addition): weighted (the default), round-robin or fill-first."""
    text = value.text().lower()
    if text in ("", "weighted"):
        return ChannelGroup.Strategy.WEIGHTED
    if text not in STRATEGIES:
        raise value.error(f"must be weighted, round-robin or fill-first, got '{text}'")
    return STRATEGIES[text]


def _find_group(run: ImportRun, name: str) -> ChannelGroup | None:
    groups = ChannelGroup.objects.filter(team=run.team)
    return groups.filter(name__iexact=name).first() or groups.filter(slug=slugify(name)).first()


def _members(run: ImportRun, prefixes: list[str], names: list[str]) -> list[int]:
    """Ids of the team's channels whose prefix or name (case-insensitive) is listed."""
    wanted = {name.lower() for name in names}
    rows = Channel.objects.filter(team=run.team).values_list("pk", "prefix", "name")
    return [pk for pk, prefix, name in rows if (prefix and prefix.lower() in prefixes) or name.lower() in wanted]


def _resolve_group(run: ImportRun, value: Value) -> ChannelGroup | None:
    """The team's group named by ``value``, else the implicit group of a channel prefix (§2.1)."""
    name = value.text()
    prefix = name.strip("/").lower()
    group = _find_group(run, name)
    if group is None and slugify(prefix) and (members := _members(run, [prefix], [])):
        group = ChannelGroup(team=run.team)
        values = {"name": prefix, "slug": slugify(prefix), "match_prefixes": [prefix]}
        values["description"] = f"The channels with prefix '{prefix}' (an implicit group in CliRelay)."
        run.save("routing groups", group, values, value, m2m={"channels": members})
        run.warn(value, f"created routing group '{prefix}' for the channels with that prefix")
    if group is None:
        run.warn(value, f"{value.name}: no routing group named '{name}'")
    return group


def import_path_routes(run: ImportRun, value: Value) -> None:
    """``routing.path-routes``; a route to an unknown group is reported and skipped."""
    paths: set[str] = set()
    for item in value.items():
        run.check_keys(item, ("path", "group", "strip-prefix", "fallback"))
        path = _route_path(item["path"])
        if path in paths:
            raise item["path"].error(f"{path} is routed by an earlier entry too")
        paths.add(path)
        fallback = (item["fallback"].text() or "none").lower()
        if fallback not in PathRoute.Fallback.values:
            raise item["fallback"].error("must be none or default")
        group = _resolve_group(run, item["group"])
        if group is None:
            continue
        route = PathRoute.objects.filter(team=run.team, path=path).first() or PathRoute(team=run.team)
        values = {"path": path, "group_id": group.pk, "strip_prefix": item["strip-prefix"].flag(True)}
        run.save("path routes", route, {**values, "fallback": fallback}, item)


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


class _KeyNames:
    """The team's key names, and the next free ``api-key-N`` for keys the file leaves unnamed."""

    def __init__(self, run: ImportRun, entries: list[Value]) -> None:
        self.taken = {name.lower() for name in ApiKey.objects.filter(team=run.team).values_list("name", flat=True)}
        self.taken |= {entry["name"].text().lower() for entry in entries}
        self.number = 0

    def next(self) -> str:
        while True:
            self.number += 1
            name = f"api-key-{self.number}"
            if name not in self.taken:
                self.taken.add(name)
                return name


def import_api_keys(run: ImportRun) -> None:
    """``api-key-entries``, then the bare ``api-keys`` (the first occurrence of a key wins, as in §1.2)."""
    entries = run.root["api-key-entries"].items()
    names = _KeyNames(run, entries)
    seen: set[str] = set()
    for entry in entries:
        run.check_keys(entry, _KEY_ENTRY_KEYS)
        key = _find_key(run, entry["key"], seen)
        if key is None:
            continue
        groups, channels, scoped = _key_scope(run, entry)
        values = _key_values(run, entry, key, names)
        values["enabled"] = values["enabled"] and scoped
        run.save("API keys", key, values, entry, m2m={"allowed_channel_groups": groups, "allowed_channels": channels})
    for item in run.root["api-keys"].items():
        key = _find_key(run, item, seen)
        if key is not None and key.pk is not None:
            run.report.count("API keys", "unchanged")
        elif key is not None:
            run.save("API keys", key, {"name": names.next()}, item)


def _find_key(run: ImportRun, value: Value, seen: set[str]) -> ApiKey | None:
    """The row for the key in ``value``, found by its hash (new and unsaved if unknown); None to skip it."""
    raw = value.text()
    if not raw:
        run.warn(value, f"{value.name} is empty; skipped")
        return None
    digest = hash_key(raw)
    if digest in seen:
        run.warn(value, f"{value.name} repeats an earlier key; the first one is imported")
        return None
    seen.add(digest)
    key = ApiKey.objects.filter(key_hash=digest).first()
    if key is not None and key.team_id != run.team.pk:
        raise value.error("is already a key of another team")
    if key is None:
        key = ApiKey(team=run.team)
        key.set_key(raw)
    return key


def _key_values(run: ImportRun, entry: Value, key: ApiKey, names: _KeyNames) -> dict[str, Any]:
    name = entry["name"].text() or (key.name if key.pk else names.next())
    if ApiKey.objects.filter(team=run.team, name=name).exclude(pk=key.pk).exists():
        raise entry["name"].error(f"'{name}' is the name of another key of the team")
    values: dict[str, Any] = {
        "name": name,
        "enabled": not entry["disabled"].flag(),
        "daily_request_limit": run.count(entry["daily-limit"]),
        "total_request_limit": run.count(entry["total-quota"]),
        "spending_limit_usd": max(entry["spending-limit"].decimal(), Decimal(0)),
        "concurrency_limit": run.count(entry["concurrency-limit"]),
        "rpm_limit": run.count(entry["rpm-limit"]),
        "tpm_limit": run.count(entry["tpm-limit"]),
        "allowed_models": entry["allowed-models"].strings(),
        "system_prompt": entry["system-prompt"].text(),
    }
    if created_at := entry["created-at"].moment():
        values["created_at"] = created_at
    return values


def _key_scope(run: ImportRun, entry: Value) -> tuple[list[int], list[int], bool]:
    """Allowed group and channel ids, and whether every restriction the file gives still restricts."""
    wanted_groups = [item for item in entry["allowed-channel-groups"].items() if item.text()]
    wanted_channels = [item for item in entry["allowed-channels"].items() if item.text()]
    groups = [group.pk for item in wanted_groups if (group := _resolve_group(run, item))]
    channels = []
    for item in wanted_channels:
        channel = Channel.objects.filter(team=run.team, name__iexact=item.text()).only("pk").first()
        if channel is None:
            run.warn(item, f"{item.name}: no channel named '{item.text()}'")
        else:
            channels.append(channel.pk)
    pairs = (("allowed-channel-groups", wanted_groups, groups), ("allowed-channels", wanted_channels, channels))
    lost = [name for name, wanted, found in pairs if wanted and not found]
    for name in lost:
        # An empty list allows everything: disabling is the only way to keep the key as narrow as the file meant.
        run.warn(entry, f"{entry.name} is imported disabled: nothing in its {name} exists (empty would allow all)")
    return groups, channels, not lost
