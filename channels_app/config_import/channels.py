"""The proxy pool and the channel lists: ``*-api-key`` entries and ``openai-compatibility`` providers."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import urlsplit

from channels_app.config_import.document import Value
from channels_app.config_import.notes import CHANNEL_NOTES, CLOAK_NOTES
from channels_app.config_import.run import ImportRun
from channels_app.models import Channel, ChannelKey, ProviderKind, ProxyEntry

KEY_CHANNEL_KINDS = (
    ProviderKind.GEMINI_API_KEY,
    ProviderKind.INTERACTIONS_API_KEY,
    ProviderKind.CLAUDE_API_KEY,
    ProviderKind.CODEX_API_KEY,
    ProviderKind.VERTEX_API_KEY,
)
_SHARED_KEYS = {"name", "priority", "prefix", "base-url", "headers", "models", "excluded-models"}
_SHARED_KEYS |= {"disable-cooling"}
_CHANNEL_KEYS = _SHARED_KEYS | {"api-key", "proxy-url", "proxy-id"}
_COMPAT_KEYS = _SHARED_KEYS | {"api-key-entries", "api-keys"}
# Keys kept in Channel.options under their config.yaml names: every kind's, then provider-specific ones.
_SHARED_OPTIONS = ("disable-cooling",)
_OPTION_KEYS: dict[str, tuple[str, ...]] = {
    ProviderKind.CLAUDE_API_KEY: ("cloak", "skip-anthropic-processing"),
    ProviderKind.CODEX_API_KEY: ("websockets",),
}
_MANAGED_OPTIONS = {*_SHARED_OPTIONS, *(key for keys in _OPTION_KEYS.values() for key in keys)}


def import_channels(run: ImportRun) -> None:
    """Every channel list of the file, in a fixed order so derived names stay stable."""
    for kind in KEY_CHANNEL_KINDS:
        for index, entry in enumerate(run.root[kind].items()):
            _import_key_channel(run, kind, index, entry)
    for index, entry in enumerate(run.root["openai-compatibility"].items()):
        _import_compat_channel(run, index, entry)


def import_proxy_pool(run: ImportRun, value: Value) -> None:
    """``proxy-pool`` entries, normalised as the reference does (§4): bad URLs and repeated ids dropped."""
    for item in value.items():
        run.check_keys(item, ("id", "name", "url", "enabled", "description"))
        url = item["url"].text()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "socks5") or not parts.hostname:
            run.warn(item, f"{item.name} dropped: url must be an http, https or socks5 URL with a host")
            continue
        pool_id = _pool_id(item["id"].text()) or "proxy-" + hashlib.sha1(url.encode()).hexdigest()[:10]
        if pool_id in run.proxies:
            run.warn(item, f"{item.name} dropped: the id '{pool_id}' is used by an earlier entry")
            continue
        name = item["name"].text() or pool_id
        proxy = ProxyEntry.objects.filter(name=name).first() or ProxyEntry()
        values = {"name": name, "url": url, "enabled": item["enabled"].flag(True)}
        run.save("proxies", proxy, {**values, "description": item["description"].text()}, item)
        run.proxies[pool_id] = proxy


def _pool_id(raw: str) -> str:
    """A proxy-pool id as the reference normalises it: lower case, other runs of characters as '-'."""
    return re.sub(r"[^a-z0-9]+", "-", raw.strip().lower())


def _pool_proxy(run: ImportRun, value: Value) -> int | None:
    """The pool entry a ``proxy-id`` names; a missing one falls back to proxy-url, as in the reference."""
    wanted = value.text()
    if not wanted:
        return None
    proxy = run.proxies.get(_pool_id(wanted)) or ProxyEntry.objects.filter(name__iexact=wanted).first()
    if proxy is None:
        run.warn(value, f"{value.name}: no proxy '{wanted}' in the proxy pool; proxy-url applies instead")
        return None
    return proxy.pk


def _channel_name(run: ImportRun, kind: str, index: int, entry: Value) -> str:
    """The channel's name: its ``name``, else kind and position; unique within the file."""
    name = entry["name"].text() or f"{kind}-{index + 1}"
    if name.lower() in run.channel_names:
        raise entry.error(f"is named '{name}', like the channel on line {run.channel_names[name.lower()]}")
    run.channel_names[name.lower()] = entry.line
    return name


def _find_channel(run: ImportRun, name: str) -> Channel:
    return Channel.objects.filter(team=run.team, name__iexact=name).first() or Channel(team=run.team)


def _shared_values(run: ImportRun, kind: str, name: str, entry: Value) -> dict[str, Any]:
    """The fields every channel kind shares."""
    prefix = entry["prefix"].text().strip("/")
    if "/" in prefix:
        raise entry["prefix"].error("must be one path segment, without '/'")
    return {
        "kind": kind,
        "name": name,
        "base_url": entry["base-url"].text(),
        "headers": entry["headers"].text_map(),
        "served_models": [_model(item) for item in entry["models"].items()],
        "excluded_models": entry["excluded-models"].strings(),
        "prefix": prefix,
        "priority": entry["priority"].integer(),
    }


def _model(item: Value) -> dict[str, Any]:
    name = item["name"].text()
    if not name:
        raise item.error("needs a name (the upstream model)")
    return {**item.plain(), "name": name, "alias": item["alias"].text()}


def _import_key_channel(run: ImportRun, kind: str, index: int, entry: Value) -> None:
    extras = _OPTION_KEYS.get(kind, ())
    run.check_keys(entry, _CHANNEL_KEYS | set(extras), CHANNEL_NOTES)
    name = _channel_name(run, kind, index, entry)
    if not entry["api-key"].text():
        run.warn(entry, f"{entry.name} has no api-key; skipped")
        return
    values = _shared_values(run, kind, name, entry)
    values["secret"] = entry["api-key"].text()
    values["proxy_url"] = run.proxy_url(entry["proxy-url"])
    values["proxy_id"] = _pool_proxy(run, entry["proxy-id"])
    channel = _find_channel(run, name)
    run.save("channels", channel, {**values, "options": _options(run, channel, extras, entry)}, entry)


def _options(run: ImportRun, channel: Channel, extras: tuple[str, ...], entry: Value) -> dict[str, Any]:
    """The channel's options: those the file gives, and those it has no key for (set in the admin) kept."""
    options = {key: value for key, value in channel.options.items() if key not in _MANAGED_OPTIONS}
    for key in (*_SHARED_OPTIONS, *extras):
        if entry[key].present:
            options[key] = _cloak(run, entry[key]) if key == "cloak" else entry[key].flag()
    return options


def _cloak(run: ImportRun, value: Value) -> dict[str, Any]:
    run.check_keys(value, ("mode", "strict-mode", "cache-user-id"), CLOAK_NOTES)
    mode = (value["mode"].text() or "auto").lower()
    if mode not in ("auto", "always", "never"):
        raise value["mode"].error("must be auto, always or never")
    flags = {key: value[key].flag() for key in ("strict-mode", "cache-user-id")}
    return {"mode": mode, **flags}


def _import_compat_channel(run: ImportRun, index: int, entry: Value) -> None:
    """An OpenAI-compatible provider: its first key is the channel's secret, the others extra keys."""
    kind = ProviderKind.OPENAI_COMPATIBILITY
    run.check_keys(entry, _COMPAT_KEYS, CHANNEL_NOTES)
    name = _channel_name(run, kind, index, entry)
    values = _shared_values(run, kind, name, entry)
    values["proxy_id"] = None
    credentials: list[tuple[str, str, Value]] = []
    for position, item in enumerate(entry["api-key-entries"].items()):
        run.check_keys(item, ("api-key", "proxy-url", "proxy-id"), CHANNEL_NOTES)
        if position == 0:
            values["proxy_id"] = _pool_proxy(run, item["proxy-id"])
        elif item["proxy-id"].present:
            run.warn(item, f"{item.name}.proxy-id: extra keys cannot use the proxy pool; set proxy-url")
        credentials.append((item["api-key"].text(), run.proxy_url(item["proxy-url"]), item))
    # Older files list bare keys under api-keys.
    credentials += [(item.text(), "", item) for item in entry["api-keys"].items()]
    values["secret"], values["proxy_url"], _ = credentials[0] if credentials else ("", "", entry)
    channel = _find_channel(run, name)
    run.save("channels", channel, {**values, "options": _options(run, channel, (), entry)}, entry)
    _replace_extra_keys(run, channel, credentials[1:])


def _replace_extra_keys(run: ImportRun, channel: Channel, credentials: list[tuple[str, str, Value]]) -> None:
    """Make the channel's extra keys equal the file's list, replacing them all when they differ."""
    wanted = [(secret, proxy_url) for secret, proxy_url, _ in credentials]
    current = [(key.secret, key.proxy_url) for key in channel.extra_keys.all()]
    if current == wanted:
        run.report.count("extra channel keys", "unchanged", len(wanted))
        return
    channel.extra_keys.all().delete()
    run.report.count("extra channel keys", "deleted", len(current))
    for secret, proxy_url, where in credentials:
        run.save("extra channel keys", ChannelKey(channel=channel), {"secret": secret, "proxy_url": proxy_url}, where)
