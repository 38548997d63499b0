"""What every fake upstream does alike: gates, cut-offs, stalls, recording, resets (over raw HTTP)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.fakes.fixtures import CLAUDE_API_KEY, CODEX_TOKEN, GEMINI_API_KEY, GEMINI_CLI_TOKEN
from tests.fakes.upstream import FakeUpstream

USER = [{"role": "user", "content": "Say hello"}]
GEMINI_CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}

# For each fake: the path, headers and body of a streamed request it accepts.
STREAMS: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "openai_upstream": ("/v1/chat/completions", {}, {"model": "gpt-x", "messages": USER, "stream": True}),
    "claude_upstream": (
        "/v1/messages",
        {"x-api-key": CLAUDE_API_KEY, "anthropic-version": "2023-06-01"},
        {"model": "claude-x", "max_tokens": 10, "messages": USER, "stream": True},
    ),
    "gemini_upstream": (
        "/v1beta/models/gemini-x:streamGenerateContent?alt=sse",
        {"x-goog-api-key": GEMINI_API_KEY},
        GEMINI_CONTENTS,
    ),
    "gemini_cli_upstream": (
        "/v1internal:streamGenerateContent?alt=sse",
        {"authorization": f"Bearer {GEMINI_CLI_TOKEN}"},
        {"project": "p", "model": "gemini-x", "request": GEMINI_CONTENTS},
    ),
    "responses_upstream": (
        "/responses",
        {"authorization": f"Bearer {CODEX_TOKEN}"},
        {"model": "gpt-x", "input": "Say hello", "instructions": "", "store": False, "stream": True},
    ),
}
every_fake = pytest.mark.parametrize("name", list(STREAMS))


def fake_and_request(request: pytest.FixtureRequest, name: str) -> tuple[Any, dict[str, Any]]:
    fake = request.getfixturevalue(name)
    path, headers, body = STREAMS[name]
    root = fake.base_url.removesuffix("/v1")
    return fake, {"method": "POST", "url": f"{root}{path}", "headers": headers, "json": body}


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """The fake marks a request completed just after its last byte leaves; wait for that, bounded."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


@every_fake
def test_a_gate_holds_the_stream_after_its_first_event_until_released(
    request: pytest.FixtureRequest, name: str
) -> None:
    fake, call = fake_and_request(request, name)
    fake.reply("one two three four")
    gate = fake.hold_after_first_chunk()

    with httpx.Client(timeout=10) as client, client.stream(**call) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        time.sleep(0.05)  # room for a fake that ignored the gate to send more
        held = fake.last.events_sent
        gate.release()
        rest = b"".join(chunks)

    assert response.status_code == 200 and first
    assert held == 1
    assert rest and _eventually(lambda: fake.last.completed)


@every_fake
def test_a_stream_can_be_cut_off_mid_body(request: pytest.FixtureRequest, name: str) -> None:
    fake, call = fake_and_request(request, name)
    fake.reply("one two three four")
    fake.cut_off(after_events=2)

    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.Client(timeout=10) as client,
        client.stream(**call) as response,
    ):
        response.read()

    assert fake.last.events_sent == 2 and not fake.last.completed


@every_fake
def test_a_stalled_fake_never_answers_until_reset(request: pytest.FixtureRequest, name: str) -> None:
    fake, call = fake_and_request(request, name)
    fake.stall()

    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=httpx.Timeout(10, read=0.3)) as client:
        client.request(**call)

    assert len(fake.requests) == 1
    fake.reset()
    assert fake.requests == [] and not fake.script.stall


@pytest.mark.parametrize("name", ["claude_upstream", "gemini_upstream", "responses_upstream"])
@pytest.mark.parametrize("after_events", [0, 2])
def test_a_stream_can_fall_silent_after_some_events(
    request: pytest.FixtureRequest, name: str, after_events: int
) -> None:
    fake, call = fake_and_request(request, name)
    fake.stall_after(after_events)
    received = b""

    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.Client(timeout=httpx.Timeout(10, read=0.3)) as client,
        client.stream(**call) as response,
    ):
        assert response.status_code == 200  # the headers came
        for chunk in response.iter_raw():
            received += chunk

    assert fake.last.events_sent == after_events and (received != b"") == (after_events > 0)


@every_fake
def test_every_request_is_recorded(request: pytest.FixtureRequest, name: str) -> None:
    fake, call = fake_and_request(request, name)

    response = httpx.request(**{**call, "headers": {**call["headers"], "X-Trace": "abc"}})

    assert response.status_code == 200
    sent = fake.last
    assert sent.method == "POST" and call["url"].split("?")[0].endswith(sent.path)
    assert sent.headers["x-trace"] == "abc"
    assert sent.json == call["json"]
    assert _eventually(lambda: sent.completed) and sent.events_sent > 2


@every_fake
def test_unknown_paths_are_not_found(request: pytest.FixtureRequest, name: str) -> None:
    _, call = fake_and_request(request, name)

    response = httpx.post(call["url"].split("?")[0] + "/nope", json={}, headers=call["headers"])

    assert response.status_code == 404
    assert "error" in response.json()


@pytest.mark.parametrize("name", ["claude_upstream", "gemini_upstream", "responses_upstream"])
def test_a_delay_between_events_still_delivers_them_all(request: pytest.FixtureRequest, name: str) -> None:
    fake, call = fake_and_request(request, name)
    fake.reply(["a", "b", "c"], chunk_delay=0.01)

    response = httpx.request(**call)

    assert response.status_code == 200 and _eventually(lambda: fake.last.completed)


@pytest.mark.parametrize("name", ["claude_upstream", "gemini_upstream", "responses_upstream"])
def test_reply_refuses_fields_the_script_does_not_have(request: pytest.FixtureRequest, name: str) -> None:
    fake: FakeUpstream = request.getfixturevalue(name)

    with pytest.raises(AttributeError, match="no field 'txet'"):
        fake.reply("hi", txet="typo")
