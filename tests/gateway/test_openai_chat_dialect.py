"""OpenAI Chat Completions: request checks, upstream body, and the SSE pass-through."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.dialects import openai_chat
from gateway.ir import Usage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openai_chat"
RECORDED = (FIXTURES / "stream_with_usage.sse").read_bytes()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"{nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "'model' is required"),
        (b'{"model": "", "messages": [{"role": "user", "content": "hi"}]}', "'model' is required"),
        (b'{"model": "m"}', "'messages' is required"),
        (b'{"model": "m", "messages": []}', "'messages' is required"),
        (b'{"model": "m", "messages": [{}], "stream": "yes"}', "'stream' must be a boolean"),
    ],
)
def test_it_rejects_bad_requests_with_a_clear_reason(body: bytes, reason: str) -> None:
    with pytest.raises(openai_chat.BadRequest, match=reason):
        openai_chat.read_body(body)


def test_the_clients_bytes_go_upstream_untouched_when_nothing_must_change() -> None:
    raw = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    assert openai_chat.upstream_body(openai_chat.read_body(raw), raw, "gpt-4o") is raw


def test_an_alias_is_rewritten_and_streams_always_ask_for_usage() -> None:
    raw = b'{"model":"alias","stream":true,"stream_options":{"foo":1},"messages":[{"role":"user","content":"hi"}]}'
    sent = orjson.loads(openai_chat.upstream_body(openai_chat.read_body(raw), raw, "real-model"))
    assert sent["model"] == "real-model"
    assert sent["stream_options"] == {"foo": 1, "include_usage": True}


def _feed_in_pieces(relay: openai_chat.StreamRelay, data: bytes, size: int) -> bytes:
    out = b"".join(relay.feed(data[i : i + size]) for i in range(0, len(data), size))
    return out + relay.finish()


@pytest.mark.parametrize("piece", [1, 7, 64, 4096])
@pytest.mark.parametrize("client_wants_usage", [True, False])
def test_the_stream_passes_through_and_its_usage_is_read_however_it_is_split(
    piece: int, client_wants_usage: bool
) -> None:
    relay = openai_chat.StreamRelay(client_wants_usage)
    out = _feed_in_pieces(relay, RECORDED, piece)
    assert relay.usage == Usage(input_tokens=19, output_tokens=10, cached_tokens=4, reasoning_tokens=3, total_tokens=29)
    assert relay.saw_done
    if client_wants_usage:
        assert out == RECORDED
    else:
        assert b'"choices":[]' not in out
        assert out == RECORDED.replace(RECORDED.split(b"\n\n")[4] + b"\n\n", b"")


def test_an_error_event_inside_the_stream_is_noticed() -> None:
    relay = openai_chat.StreamRelay(False)
    out = relay.feed(b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n')
    assert relay.upstream_error == {"message": "overloaded", "type": "server_error"}
    assert b"overloaded" in out


def test_a_final_event_without_its_blank_line_is_still_forwarded() -> None:
    relay = openai_chat.StreamRelay(True)
    assert relay.feed(b"data: [DONE]") == b""
    assert relay.finish() == b"data: [DONE]\n\n"


def test_usage_normalisation_reads_cached_and_reasoning_details() -> None:
    usage = openai_chat.usage_from({"prompt_tokens": 10, "completion_tokens": 5})
    assert usage == Usage(input_tokens=10, output_tokens=5, total_tokens=15)
    assert openai_chat.usage_from(None) is None


def test_errors_use_the_openai_envelope() -> None:
    body = orjson.loads(openai_chat.error_body("Invalid API key", "authentication_error", "invalid_api_key"))
    assert body == {
        "error": {
            "message": "Invalid API key",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
