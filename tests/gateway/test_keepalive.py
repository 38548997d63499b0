"""Long quiet streams get keep-alives in the client's own dialect, and the answer still arrives whole."""

from __future__ import annotations

import pytest

from channels_app.models import RuntimeSettings

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def keepalive_every_second(db: None) -> None:
    RuntimeSettings.objects.update_or_create(pk=1, defaults={"streaming_keepalive_seconds": 1})


def _read_until(lines, marker: str, limit: int = 200) -> list[str]:
    seen = []
    for line in lines:
        seen.append(line)
        if marker in line or len(seen) > limit:
            break
    return seen


def test_an_openai_stream_gets_sse_comments_while_the_upstream_is_quiet(
    keepalive_every_second, gateway, http, alice, channel, upstream
) -> None:
    gate = upstream.hold_after_first_chunk()
    body = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {alice.raw_key}"}
    with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        lines = response.iter_lines()
        assert ": keep-alive" in _read_until(lines, ": keep-alive")
        gate.release()
        rest = list(lines)
    assert "data: [DONE]" in rest


def test_an_anthropic_stream_from_an_openai_upstream_gets_ping_events(
    keepalive_every_second, gateway, http, alice, channel, upstream
) -> None:
    gate = upstream.hold_after_first_chunk()
    body = {"model": "gpt-test", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": alice.raw_key, "anthropic-version": "2023-06-01"}
    with http.stream("POST", "/v1/messages", json=body, headers=headers) as response:
        lines = response.iter_lines()
        assert "event: ping" in _read_until(lines, "event: ping")
        gate.release()
        rest = list(lines)
    assert "event: message_stop" in rest
