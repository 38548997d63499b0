"""How long an upstream asks to be left alone: headers and error bodies of each provider (providers spec §1.6)."""

from __future__ import annotations

import json
import time

import pytest

from channels_app.executors import retry_after
from channels_app.executors.claude import ClaudeExecutor
from channels_app.executors.codex import CodexExecutor
from channels_app.executors.gemini import GeminiExecutor
from channels_app.executors.openai_compat import OpenAICompatExecutor

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        (" 7 ", 7.0),
        ("Fri, 15 Jan 2027 08:00:30 GMT", 30.0),  # NOW is 2027-01-15 08:00:00 UTC
        ("Fri, 15 Jan 2027 07:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_headers_in_seconds_or_as_an_http_date(value: str | None, seconds: float | None) -> None:
    assert retry_after.header_seconds(value, now=NOW) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (str(int(NOW) + 90), 90.0),
        ("2027-01-15T08:05:00Z", 300.0),
        ("2027-01-15T09:05:00+01:00", 300.0),
        ("2027-01-15T08:05:00", None),  # no zone: unreadable, not guessed
        ("yesterday", None),
    ],
)
def test_reset_times_as_unix_seconds_or_rfc_3339(value: str, seconds: float | None) -> None:
    assert retry_after.reset_seconds(value, now=NOW) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0.847655010s", 0.84765501), ("373.801628ms", 0.373801628), ("1h2m3s", 3723.0), ("2m", 120.0), ("3x", None)],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert retry_after.go_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def _google_429(*details: dict[str, object], message: str = "Resource has been exhausted") -> bytes:
    error = {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": list(details)}
    return json.dumps({"error": error}).encode()


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37.5s"}
ERROR_INFO = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "RATE_LIMIT_EXCEEDED",
    "metadata": {"quotaResetDelay": "1m30s"},
}


@pytest.mark.parametrize(
    ("body", "seconds"),
    [
        (_google_429(ERROR_INFO, RETRY_INFO), 37.5),  # RetryInfo wins wherever it is
        (_google_429(ERROR_INFO), 90.0),
        (_google_429(message="You have exhausted your capacity. Your quota will reset after 2m5s."), 125.0),
        (_google_429(), None),
        (json.dumps([{"error": {"details": [RETRY_INFO]}}]).encode(), 37.5),  # Cloud Code's list envelope
        (b'{"error":{"type":"usage_limit_reached","resets_in_seconds":3600}}', 3600.0),
        (json.dumps({"error": {"type": "usage_limit_reached", "resets_at": int(NOW) + 600}}).encode(), 600.0),
        (b'{"error":{"message":"Rate limit reached","type":"rate_limit_error"}}', None),
        (b"<html>retry later</html>", None),
        (b"", None),
    ],
)
def test_error_bodies_state_their_reset(body: bytes, seconds: float | None) -> None:
    assert retry_after.body_seconds(body, now=NOW) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("executor", [GeminiExecutor(), OpenAICompatExecutor()])
def test_a_429_cools_down_for_the_longer_of_the_header_and_the_body(executor) -> None:
    err = executor.classify(429, _google_429(RETRY_INFO), {"retry-after": "20"})
    assert (err.status, err.cooldown_s, err.scope) == (429, 37.5, "")
    assert executor.classify(429, b"{}", {"retry-after": "20"}).cooldown_s == 20
    assert executor.classify(429, b"{}", {}).cooldown_s is None  # the scheduler's backoff decides


def _unified(**statuses: str) -> dict[str, str]:
    """Claude's unified rate-limit headers: ``five_hour="rejected"`` and so on, resets an hour apart."""
    names = {"overall": "", "five_hour": "-5h", "seven_day": "-7d", "seven_day_oi": "-7d_oi"}
    headers: dict[str, str] = {}
    for hours, (name, window) in enumerate(names.items(), start=1):
        headers[f"anthropic-ratelimit-unified{window}-status"] = statuses.get(name, "allowed")
        headers[f"anthropic-ratelimit-unified{window}-reset"] = str(int(time.time()) + hours * 3600)
    return headers


@pytest.mark.parametrize(
    ("statuses", "scope", "hours"),
    [
        ({"overall": "rejected", "five_hour": "rejected"}, "credential", 2),
        ({"overall": "rejected", "five_hour": "rejected", "seven_day": "rejected"}, "credential", 3),
        ({"seven_day": "rejected"}, "credential", 3),
        ({"overall": "rejected"}, "credential", 1),
        ({"overall": "rejected", "seven_day_oi": "rejected"}, "", 4),  # only the 7d_oi window: this model
        ({}, "", None),
    ],
)
def test_claude_unified_windows_decide_the_scope_and_the_latest_rejected_reset(
    statuses: dict[str, str], scope: str, hours: int | None
) -> None:
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}'
    err = ClaudeExecutor().classify(429, body, {"retry-after": "10", **_unified(**statuses)})
    assert err.scope == scope
    if hours is None:
        assert err.cooldown_s == 10
    else:
        assert err.cooldown_s is not None
        assert hours * 3600 + 1 - 2 <= err.cooldown_s <= hours * 3600 + 30  # plus 1–30 s of spread


def test_a_claude_fast_mode_credit_refusal_is_the_requests_own_fault() -> None:
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"Usage credits are required for fast mode"}}'
    assert ClaudeExecutor().classify(429, body, {}).scope == "request"


def test_a_claude_error_that_is_not_a_429_keeps_its_status() -> None:
    err = ClaudeExecutor().classify(529, b'{"type":"error","error":{"type":"overloaded_error"}}', _unified())
    assert (err.status, err.scope) == (529, "")


@pytest.mark.parametrize(
    "body",
    [
        b'{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","resets_in_seconds":90}}',
        b'{"error":{"message":"Selected model is at capacity. Please try a different model."}}',
    ],
)
def test_a_codex_usage_limit_or_full_model_is_a_429_whatever_its_status(body: bytes) -> None:
    err = CodexExecutor().classify(400, body, {})
    assert (err.status, err.upstream_status) == (429, 429)
    assert err.cooldown_s == (90 if b"resets_in_seconds" in body else None)
