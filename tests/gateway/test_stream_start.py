"""Reading the first event of a 2xx stream for an error, in each upstream family's wire format."""

from __future__ import annotations

import json

import pytest

from gateway.stream_start import opening_error


def _sse(data: object, event: str = "") -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


@pytest.mark.parametrize(
    ("first", "status", "message"),
    [
        (_sse({"error": {"message": "Provider returned error", "code": 502}}), 502, "Provider returned error"),
        (_sse({"error": {"message": "Rate limited", "type": "rate_limit_exceeded"}}), 429, "Rate limited"),
        (
            _sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error"),
            529,
            "Overloaded",
        ),
        (_sse({"type": "error", "code": "server_is_overloaded", "message": "busy"}, "error"), 529, "busy"),
        (
            _sse({"type": "response.failed", "response": {"error": {"code": "rate_limit_exceeded", "message": "m"}}}),
            429,
            "m",
        ),
        (
            _sse({"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}),
            429,
            "Resource exhausted",
        ),
        (b'[{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]', 503, "The"),
        (_sse({"error": "plain words"}), 502, "plain words"),
        (b": OPENROUTER PROCESSING\n\n" + _sse({"error": {"message": "x", "code": 400}}), 400, "x"),
    ],
)
def test_an_opening_error_is_found_with_its_status(first: bytes, status: int, message: str) -> None:
    found = opening_error(first)
    assert found is not None
    assert found[0] == status
    assert json.loads(found[1])["error"]["message"].startswith(message)


@pytest.mark.parametrize(
    "first",
    [
        _sse({"id": "c", "object": "chat.completion.chunk", "choices": [{"delta": {"role": "assistant"}}]}),
        _sse({"type": "message_start", "message": {"id": "msg"}}, "message_start"),
        _sse({"type": "response.created", "response": {"id": "resp", "error": None}}, "response.created"),
        _sse({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}),
        b": keep-alive\n\n",
        b"data: [DONE]\n\n",
        b"data: {not json",
    ],
)
def test_a_healthy_or_unreadable_opening_is_not_an_error(first: bytes) -> None:
    assert opening_error(first) is None
