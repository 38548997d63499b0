"""The global singletons: ``RuntimeSettings`` (routing, retries, OAuth maps, payload rules) and log storage."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from channels_app.config_import.document import Value
from channels_app.config_import.notes import ROUTING_NOTES
from channels_app.config_import.run import ImportRun
from channels_app.models import ProviderKind, RuntimeSettings
from usage.models import LogStorageSettings

OAUTH_KINDS = frozenset(
    kind.value for kind in ProviderKind if not kind.value.endswith("-api-key") and kind != "openai-compatibility"
)
STRATEGIES = {"round-robin": "round-robin", "roundrobin": "round-robin", "rr": "round-robin"}
STRATEGIES |= {"fill-first": "fill-first", "fillfirst": "fill-first", "ff": "fill-first"}
_FLAGS = {
    "force-model-prefix": "force_model_prefix",
    "disable-cooling": "disable_cooling",
}
# Accepted at their defaults; switched on, reported as not supported (they would change nothing here).
_UNSUPPORTED_WHEN_ON = {
    "passthrough-headers": "upstream response headers are not passed to clients",
    "allow-unauthenticated": "every request needs an API key (it carries the team, quotas and logs)",
    "nonstream-keepalive-interval": "non-stream answers are not padded with blank lines",
}
_COUNTS = {
    "request-retry": "request_retry",
    "max-retry-interval": "max_retry_interval",
    "max-retry-credentials": "max_retry_credentials",  # negative means unlimited in the reference, as 0 does
}
_ROUTING_KEYS = ("strategy", "include-default-group", "channel-groups", "path-routes")
_PAYLOAD_SECTIONS = ("default", "default-raw", "override", "override-raw", "filter")
_LOG_DEFAULTS = {"store-content": True, "content-retention-days": 30, "cleanup-interval-minutes": 1440}
_LOG_DEFAULTS |= {"max-total-size-mb": 1024, "vacuum-on-cleanup": True}
_LOG_ITEMS = tuple(_LOG_DEFAULTS.items())


def import_runtime_settings(run: ImportRun) -> None:
    """The keys of ``RuntimeSettings`` the file gives; the others keep their stored values."""
    root = run.root
    values: dict[str, Any] = {}
    if root["proxy-url"].present:
        values["proxy_url"] = run.proxy_url(root["proxy-url"])
    values |= {name: root[key].flag() for key, name in _FLAGS.items() if root[key].present}
    values |= {name: run.count(root[key]) for key, name in _COUNTS.items() if root[key].present}
    for key, reason in _UNSUPPORTED_WHEN_ON.items():
        value = root[key]
        if value.present and value.raw not in (False, 0, None):
            run.warn(value, f"{key} is not supported by CliRelay ({reason}); ignored")
    if (cooldown := root["transient-error-cooldown-seconds"]).present:
        values["transient_error_cooldown_seconds"] = _transient_cooldown(cooldown)
    if (streaming := root["streaming"]).present:
        run.check_keys(streaming, ("keepalive-seconds", "bootstrap-retries"))
        values["streaming_keepalive_seconds"] = run.count(streaming["keepalive-seconds"])
        values["streaming_bootstrap_retries"] = run.count(streaming["bootstrap-retries"])
    if (routing := root["routing"]).present:
        run.check_keys(routing, _ROUTING_KEYS, ROUTING_NOTES)
        values["routing_strategy"] = _strategy(routing["strategy"])
        values["include_default_group"] = routing["include-default-group"].flag(True)
    if root["oauth-model-alias"].present:
        values["oauth_model_alias"] = _oauth_map(run, root["oauth-model-alias"], _aliases)
    if root["oauth-excluded-models"].present:
        values["oauth_excluded_models"] = _oauth_map(run, root["oauth-excluded-models"], Value.strings)
    if root["payload"].present:
        values["payload_rules"] = _payload(run, root["payload"])
    if values:
        settings = RuntimeSettings.objects.filter(pk=1).first() or RuntimeSettings(pk=1)
        run.save("runtime settings", settings, values, root)


def _strategy(value: Value) -> str:
    text = (value.text() or "round-robin").lower()
    if text not in STRATEGIES:
        raise value.error(f"must be round-robin or fill-first, got '{text}'")
    return STRATEGIES[text]


def _transient_cooldown(value: Value) -> int:
    """Seconds of cool-down after a 408/5xx: 0 means the default 60 s and -1 none, so less than -1 is a mistake."""
    seconds = value.integer()
    if seconds < -1:
        raise value.error(f"must be -1 (no cool-down), 0 (60 s) or a number of seconds, got {seconds}")
    return seconds


def _oauth_map(run: ImportRun, value: Value, read: Callable[[Value], Any]) -> dict[str, Any]:
    """A mapping of OAuth channel kind to what ``read`` makes of its list."""
    result = {}
    for kind, item in value.entries():
        if kind.lower() not in OAUTH_KINDS:
            run.warn(item, f"unknown key: {item.name} (not an OAuth channel kind)")
            continue
        result[kind.lower()] = read(item)
    return result


def _aliases(value: Value) -> list[dict[str, Any]]:
    aliases = []
    for item in value.items():
        name, alias = item["name"].text(), item["alias"].text()
        if not name or not alias:
            raise item.error("needs both name and alias")
        aliases.append({**item.plain(), "name": name, "alias": alias})
    return aliases


def _payload(run: ImportRun, value: Value) -> dict[str, Any]:
    """The payload rules as written, checked: every model named, raw parameter values valid JSON."""
    run.check_keys(value, _PAYLOAD_SECTIONS)
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
                    raise param.error("must be valid JSON (raw rules insert it as it is)")
        if value[section].present:
            rules[section] = value[section].plain()
    return rules


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def import_log_storage(run: ImportRun, value: Value) -> None:
    """``request-log-storage``, normalised as the reference does (§5.3)."""
    if not value.present:
        return
    run.check_keys(value, _LOG_DEFAULTS)
    read = {key: value[key].flag(d) if isinstance(d, bool) else value[key].integer(d) for key, d in _LOG_ITEMS}
    if not any(read.values()):
        read = dict(_LOG_DEFAULTS)  # a block of zeros means "defaults", as in the reference
    interval = read["cleanup-interval-minutes"]
    values = {
        "store_content": read["store-content"],
        "content_retention_days": max(read["content-retention-days"], 0),
        "cleanup_interval_minutes": interval if interval > 0 else 1440,
        "max_total_size_mb": max(read["max-total-size-mb"], 0),
        "vacuum_on_cleanup": read["vacuum-on-cleanup"],
    }
    settings = LogStorageSettings.objects.filter(pk=1).first() or LogStorageSettings(pk=1)
    run.save("log storage settings", settings, values, value)
