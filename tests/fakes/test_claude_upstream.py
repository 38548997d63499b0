"""The fake Claude upstream, read back by the official ``anthropic`` SDK and by raw HTTP."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.fakes.claude_upstream import FakeClaudeUpstream
from tests.fakes.fixtures import CLAUDE_API_KEY
from tests.fakes.upstream import ToolCall

MESSAGES = [{"role": "user", "content": "What's the weather in Paris?"}]
HEADERS = {"x-api-key": CLAUDE_API_KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture
def client(claude_upstream: FakeClaudeUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=CLAUDE_API_KEY, base_url=claude_upstream.url, max_retries=0, timeout=10)


def sse_events(body: str) -> list[tuple[str, dict]]:
    """(event name, data) of every frame, checking each frame is exactly ``event:`` then ``data:``."""
    frames = [f for f in body.split("\n\n") if f]
    out = []
    for frame in frames:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[len("data: ") :])
        assert data["type"] == event_line[len("event: ") :]
        out.append((data["type"], data))
    return out


def test_a_message_reads_back_through_the_sdk(claude_upstream: FakeClaudeUpstream, client: anthropic.Anthropic) -> None:
    claude_upstream.reply("Sunny.", prompt_tokens=30, completion_tokens=4, cached_tokens=20, cache_creation_tokens=5)

    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES, extra_headers={"anthropic-beta": "beta-x"}
    )

    assert message.content[0].type == "text" and message.content[0].text == "Sunny."
    assert (message.model, message.stop_reason, message.stop_sequence) == ("claude-sonnet-4-5", "end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (30, 4)
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (20, 5)
    sent = claude_upstream.last
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    # anthropic 2.x sends the API key as a bearer token and its own, newer anthropic-version.
    assert sent.bearer == CLAUDE_API_KEY
    assert sent.headers["anthropic-version"]
    assert sent.headers["anthropic-beta"] == "beta-x"
    assert sent.json["messages"] == MESSAGES


def test_a_stream_accumulates_thinking_redacted_text_and_tool_use(
    claude_upstream: FakeClaudeUpstream, client: anthropic.Anthropic
) -> None:
    arguments = {"city": 'Paris "centre"', "days": [1, 2, 3], "unit": "°C"}
    claude_upstream.reply(
        "Let me check.",
        reasoning="The user wants weather.",
        redacted_thinking="EmwKAhgBEgy3",
        tool_calls=[ToolCall("get_weather", arguments, id="toolu_01abc")],
        completion_tokens=42,
    )

    with client.messages.stream(model="claude-opus-4-5", max_tokens=512, messages=MESSAGES) as stream:
        final = stream.get_final_message()

    kinds = [block.type for block in final.content]
    assert kinds == ["thinking", "redacted_thinking", "text", "tool_use"]
    thinking, redacted, text, tool = final.content
    assert thinking.thinking == "The user wants weather." and thinking.signature == claude_upstream.script.signature
    assert redacted.data == "EmwKAhgBEgy3"
    assert text.text == "Let me check."
    assert (tool.id, tool.name, tool.input) == ("toolu_01abc", "get_weather", arguments)
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 42)
    assert claude_upstream.last.json["stream"] is True and claude_upstream.last.completed


def test_the_raw_stream_is_framed_as_anthropic_sends_it(claude_upstream: FakeClaudeUpstream) -> None:
    claude_upstream.reply(
        ["Hel", "lo"], reasoning="Hmm", tool_calls=[ToolCall("f", {"a": "x" * 20})], args_fragment_size=4
    )
    body = {"model": "m", "max_tokens": 10, "messages": MESSAGES, "stream": True}

    response = httpx.post(f"{claude_upstream.url}/v1/messages?beta=true", json=body, headers=HEADERS)

    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["usage"]["output_tokens"] == 1 and start["content"] == [] and start["stop_reason"] is None
    deltas = [d for name, d in events if name == "content_block_delta"]
    assert [d["delta"]["type"] for d in deltas if d["index"] == 0] == ["thinking_delta", "signature_delta"]
    assert "".join(d["delta"]["text"] for d in deltas if d["index"] == 1) == "Hello"
    fragments = [d["delta"]["partial_json"] for d in deltas if d["index"] == 2]
    assert fragments[0] == "" and len(fragments) > 3 and json.loads("".join(fragments)) == {"a": "x" * 20}
    indexes = [d["index"] for name, d in events if name.startswith("content_block")]
    assert indexes == sorted(indexes)  # blocks never interleave
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert claude_upstream.last.query == {"beta": "true"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"stop_sequence": "###"}, ("stop_sequence", "###")),
        ({"finish_reason": "max_tokens"}, ("max_tokens", None)),
    ],
)
def test_stop_reasons_are_scriptable(
    claude_upstream: FakeClaudeUpstream, client: anthropic.Anthropic, fields: dict, expected: tuple
) -> None:
    claude_upstream.reply("cut", **fields)

    message = client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    assert (message.stop_reason, message.stop_sequence) == expected


def test_a_wrong_key_gets_an_authentication_error(claude_upstream: FakeClaudeUpstream) -> None:
    client = anthropic.Anthropic(api_key="sk-ant-wrong", base_url=claude_upstream.url, max_retries=0)

    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    body = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["request_id"].startswith("req_")


def test_anthropic_version_is_required_and_x_api_key_is_accepted(claude_upstream: FakeClaudeUpstream) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": MESSAGES}

    missing = httpx.post(f"{claude_upstream.url}/v1/messages", json=body, headers={"x-api-key": CLAUDE_API_KEY})
    with_key = httpx.post(f"{claude_upstream.url}/v1/messages", json=body, headers=HEADERS)
    no_max_tokens = httpx.post(
        f"{claude_upstream.url}/v1/messages", json={"model": "m", "messages": MESSAGES}, headers=HEADERS
    )

    assert missing.status_code == 400 and missing.json()["error"]["message"] == "anthropic-version: header is required"
    assert with_key.status_code == 200
    assert no_max_tokens.status_code == 400 and no_max_tokens.json()["error"]["type"] == "invalid_request_error"


def test_a_rate_limit_carries_retry_after_and_ratelimit_headers(
    claude_upstream: FakeClaudeUpstream, client: anthropic.Anthropic
) -> None:
    claude_upstream.rate_limit(retry_after=45, unified=True)

    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    headers = caught.value.response.headers
    assert headers["retry-after"] == "45"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-unified-5h-status"] == "rejected"
    assert int(headers["anthropic-ratelimit-unified-5h-reset"]) > 0
    assert caught.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_errors_before_the_stream_have_anthropic_types(
    claude_upstream: FakeClaudeUpstream, client: anthropic.Anthropic, status: int, error_class: type, error_type: str
) -> None:
    claude_upstream.fail(status)

    with pytest.raises(error_class) as caught:
        client.messages.create(model="m", max_tokens=5, messages=MESSAGES, stream=True)

    assert caught.value.status_code == status
    assert caught.value.body["error"]["type"] == error_type


def test_an_error_event_mid_stream_raises_in_the_sdk(
    claude_upstream: FakeClaudeUpstream, client: anthropic.Anthropic
) -> None:
    claude_upstream.reply("one two three four")
    claude_upstream.fail_midstream(after_events=4)
    seen = []

    with pytest.raises(anthropic.APIStatusError) as caught:
        for event in client.messages.create(model="m", max_tokens=5, messages=MESSAGES, stream=True):
            seen.append(event.type)

    assert seen == ["message_start", "content_block_start", "content_block_delta"]  # ping is skipped by the SDK
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert claude_upstream.last.events_sent == 5 and not claude_upstream.last.completed


def test_count_tokens_is_scripted_or_counted(claude_upstream: FakeClaudeUpstream, client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model="m", messages=MESSAGES, system="Be brief.")
    claude_upstream.script.count_tokens = 1234
    scripted = client.messages.count_tokens(model="m", messages=MESSAGES)

    assert counted.input_tokens == 12  # words and punctuation of the system prompt, role and message
    assert scripted.input_tokens == 1234
    assert claude_upstream.last.path == "/v1/messages/count_tokens"


def test_an_unknown_model_is_not_found(claude_upstream: FakeClaudeUpstream, client: anthropic.Anthropic) -> None:
    claude_upstream.script.known_models = ["claude-sonnet-4-5"]

    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-nope", max_tokens=5, messages=MESSAGES)

    assert caught.value.body["error"] == {"type": "not_found_error", "message": "model: claude-nope"}
