"""How long an upstream asks to be left alone: ``Retry-After`` and the quota resets error bodies state.

The scheduler cools a (credential, model) down for exactly this long when an upstream gives a time
(providers spec §1.6, §14.2); only without one does it fall back to its exponential backoff.

* ``Retry-After``: seconds or an HTTP date (RFC 9110 §10.2.3).
* Google (Gemini, Vertex, Cloud Code): ``error.details[]`` ``RetryInfo.retryDelay`` ("0.84s"), else
  ``ErrorInfo.metadata.quotaResetDelay`` ("373.8ms"), else "… reset after 1h2m3s" in the message (§3.7).
* Codex: ``error.resets_in_seconds``, else ``error.resets_at`` (unix seconds) (§7.5).
* Anthropic's reset headers: unix seconds or RFC 3339 (``reset_seconds``, §5.4).
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RESET_AFTER = re.compile(r"reset after\s+((?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+)", re.IGNORECASE)
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


def header_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """A ``Retry-After`` value in seconds from now (never negative), or None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def reset_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds until a reset given as unix seconds or an RFC 3339 time, or None."""
    if not value:
        return None
    current = time.time() if now is None else now
    value = value.strip()
    try:
        return max(float(value) - current, 0.0)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - current, 0.0)


def go_duration(text: str) -> float | None:
    """A Go / protobuf duration ("1.5s", "373.8ms", "1h2m3s") in seconds, or None."""
    text = text.strip()
    parts = _GO_DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _GO_UNITS[unit] for number, unit in parts)


def body_seconds(body: bytes, *, now: float | None = None) -> float | None:
    """The wait an error body states (Google RetryInfo / quotaResetDelay / message, Codex resets), or None."""
    lowered = body.lower()
    if b"reset" not in lowered and b"retry" not in lowered:
        return None  # the common case costs one scan, no JSON parse
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    return _google(error) or _codex(error, now)


def _google(error: dict[str, Any]) -> float | None:
    details = error.get("details")
    items = [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []
    for item in items:
        if item.get("@type") == _RETRY_INFO and isinstance(item.get("retryDelay"), str):
            seconds = go_duration(item["retryDelay"])
            if seconds is not None:
                return seconds
    for item in items:
        metadata = item.get("metadata")
        if item.get("@type") == _ERROR_INFO and isinstance(metadata, dict):
            delay = metadata.get("quotaResetDelay")
            seconds = go_duration(delay) if isinstance(delay, str) else None
            if seconds is not None:
                return seconds
    message = error.get("message")
    found = _RESET_AFTER.search(message) if isinstance(message, str) else None
    return go_duration(found.group(1)) if found else None


def _codex(error: dict[str, Any], now: float | None) -> float | None:
    seconds = error.get("resets_in_seconds")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
        return float(seconds)
    at = error.get("resets_at")
    if isinstance(at, int | float) and not isinstance(at, bool):
        return reset_seconds(str(at), now=now)
    return None
