"""The Responses API over WebSocket end to end: a real socket, the gateway under uvicorn, fake upstreams.

Each turn is bridged to the streamed HTTP path, so these tests look at what a Codex-style client
receives frame by frame, at what the (stateless) upstream receives for each turn, and at the usage log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from channels_app import cooldowns
from channels_app.models import Channel, ProviderKind, RuntimeSettings
from gateway.responses_ws import SseData
from tests.conftest import Persona
from tests.fakes.fixtures import (  # noqa: F401
    CODEX_TOKEN,
    GEMINI_API_KEY,
    gemini_upstream,
    gemini_upstream_server,
    responses_upstream,
    responses_upstream_server,
)
from tests.fakes.gemini_upstream import FakeGeminiUpstream
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.fakes.upstream import ToolCall
from usage import recorder
from usage.models import RequestLog

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "codex-test"
UPSTREAM_MODEL = "gpt-5-codex"
TERMINAL = frozenset(("response.completed", "response.incomplete", "response.failed", "error"))


@pytest.fixture(autouse=True)
def _rows_written() -> Iterator[None]:
    yield
    assert recorder.flush(), "usage rows were still queued at the end of the test"


@pytest.fixture
def codex_channel(alice: Persona, responses_upstream: FakeResponsesUpstream) -> Channel:  # noqa: F811
    RuntimeSettings.objects.update_or_create(pk=1, defaults={"max_retry_interval": 0})  # refusals come back at once
    return Channel.objects.create(
        team=alice.team,
        kind=ProviderKind.CODEX_API_KEY,
        name="fake-codex",
        base_url=responses_upstream.base_url,
        secret=CODEX_TOKEN,
        served_models=[{"name": UPSTREAM_MODEL, "alias": MODEL}],
    )


def socket(url: str, key: str | None, path: str = "/v1/responses", **headers: str) -> ClientConnection:
    sent = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(f"{url}{path}", additional_headers={**sent, **headers}, proxy=None, open_timeout=10)


def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    ws.send(orjson.dumps(frame).decode())


def turn(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every frame of one turn, up to its terminal event (or error frame)."""
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] not in TERMINAL:
        frames.append(orjson.loads(ws.recv(timeout=10)))
    return frames


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["delta"] for f in frames if f["type"] == "response.output_text.delta")


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def without_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output items as the gateway replays them: upstream item ids dropped (store: false keeps none)."""
    return [{k: v for k, v in item.items() if k != "id"} for item in items]


def rows(expected: int, timeout: float = 10.0, **filters: Any) -> list[RequestLog]:
    """The usage rows matching ``filters``, once ``expected`` are written (a turn's row lands as its stream ends)."""
    deadline = time.monotonic() + timeout
    while True:
        recorder.flush()
        found = list(RequestLog.objects.filter(**filters).order_by("id"))
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# --- turns --------------------------------------------------------------------------------------


def test_a_turn_streams_every_upstream_event_as_one_text_frame(
    ws_gateway: str,
    alice: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    responses_upstream.reply("Hello over a socket.", reasoning="Thinking it over.")

    with socket(ws_gateway, alice.raw_key) as ws:
        send(ws, {"type": "response.create", "model": MODEL, "instructions": "Be brief.", "input": [user("Hi")]})
        frames = turn(ws)

    assert frames[0]["type"] == "response.created"
    assert frames[-1]["type"] == "response.completed"
    assert text_of(frames) == "Hello over a socket."
    assert [f["sequence_number"] for f in frames] == list(range(len(frames)))
    sent = responses_upstream.last
    assert (sent.json["model"], sent.json["stream"], sent.json["store"]) == (UPSTREAM_MODEL, True, False)
    assert sent.json["instructions"] == "Be brief."
    assert sent.bearer == CODEX_TOKEN and alice.raw_key not in str(sent.headers)
    [row] = rows(1)
    assert (row.client_dialect, row.path, row.stream, row.status_code) == (
        "openai-responses",
        "/v1/responses",
        True,
        200,
    )
    assert (row.requested_model, row.upstream_model, row.input_tokens, row.output_tokens) == (
        MODEL,
        UPSTREAM_MODEL,
        12,
        7,
    )


def test_each_later_turn_sends_the_stateless_upstream_the_whole_conversation(
    ws_gateway: str,
    alice: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    responses_upstream.reply(
        "", reasoning="I should list the files.", tool_calls=[ToolCall("shell", {"cmd": "ls"}, "call_1")]
    )
    with socket(ws_gateway, alice.raw_key) as ws:
        send(
            ws,
            {"type": "response.create", "model": MODEL, "instructions": "Be brief.", "input": [user("Which files?")]},
        )
        first = turn(ws)
        first_output = first[-1]["response"]["output"]
        result = {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"}
        responses_upstream.reply("There is a.txt.")
        send(ws, {"type": "response.create", "previous_response_id": first[0]["response"]["id"], "input": [result]})
        second = turn(ws)
        responses_upstream.reply("You are welcome.")
        send(ws, {"type": "response.append", "input": [user("Thanks")]})
        third = turn(ws)

    assert [item["type"] for item in first_output] == ["reasoning", "function_call"]
    assert (text_of(second), text_of(third)) == ("There is a.txt.", "You are welcome.")
    replayed = without_ids(first_output)
    second_sent, third_sent = responses_upstream.requests[1].json, responses_upstream.requests[2].json
    assert second_sent["input"] == [user("Which files?"), *replayed, result]
    assert replayed[0]["encrypted_content"] and replayed[1]["call_id"] == "call_1"
    assert (second_sent["model"], second_sent["instructions"]) == (UPSTREAM_MODEL, "Be brief.")
    assert "previous_response_id" not in second_sent
    answer = without_ids(second[-1]["response"]["output"])
    assert third_sent["input"] == [*second_sent["input"], *answer, user("Thanks")]
    assert [r.status_code for r in rows(3)] == [200, 200, 200]


def test_a_pre_warm_is_answered_locally_and_the_next_turn_builds_on_its_input(
    ws_gateway: str,
    alice: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    with socket(ws_gateway, alice.raw_key) as ws:
        send(
            ws,
            {"type": "response.create", "model": MODEL, "instructions": "", "input": [user("Hi")], "generate": False},
        )
        warm = turn(ws)
        assert responses_upstream.requests == []
        send(
            ws,
            {"type": "response.create", "model": MODEL, "previous_response_id": warm[0]["response"]["id"], "input": []},
        )
        real = turn(ws)

    assert [f["type"] for f in warm] == ["response.created", "response.completed"]
    assert (
        warm[0]["response"]["id"].startswith("resp_prewarm_") and warm[1]["response"]["id"] == warm[0]["response"]["id"]
    )
    assert warm[1]["response"]["usage"]["total_tokens"] == 0
    assert real[-1]["type"] == "response.completed"
    assert responses_upstream.last.json["input"] == [user("Hi")]
    assert len(rows(1)) == 1


def test_the_codex_backend_path_serves_the_same_protocol_and_echoes_the_turn_state(
    ws_gateway: str,
    alice: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    path = "/backend-api/codex/responses"
    with socket(
        ws_gateway, alice.raw_key, path, **{"x-codex-turn-state": "state-123", "originator": "codex_cli_rs"}
    ) as ws:
        assert ws.response is not None and ws.response.headers["x-codex-turn-state"] == "state-123"
        send(ws, {"type": "response.create", "model": MODEL, "input": "Hi"})
        frames = turn(ws)

    assert frames[-1]["type"] == "response.completed"
    assert responses_upstream.last.json["input"] == [user("Hi")]
    assert [r.path for r in rows(1)] == [path]


def test_a_model_on_another_family_is_translated_like_the_http_path(
    ws_gateway: str,
    alice: Persona,
    gemini_upstream: FakeGeminiUpstream,  # noqa: F811
) -> None:
    Channel.objects.create(
        team=alice.team,
        kind=ProviderKind.GEMINI_API_KEY,
        name="fake-gemini",
        base_url=gemini_upstream.base_url,
        secret=GEMINI_API_KEY,
        served_models=[{"name": "gemini-2.5-pro", "alias": "gem"}],
    )
    gemini_upstream.reply("First from Gemini.")
    with socket(ws_gateway, alice.raw_key) as ws:
        send(ws, {"type": "response.create", "model": "gem", "input": [user("Hi")]})
        first = turn(ws)
        gemini_upstream.reply("Second from Gemini.")
        send(ws, {"type": "response.append", "input": [user("Again")]})
        second = turn(ws)

    assert (text_of(first), text_of(second)) == ("First from Gemini.", "Second from Gemini.")
    contents = gemini_upstream.last.json["contents"]
    assert [(c["role"], c["parts"][0]["text"]) for c in contents] == [
        ("user", "Hi"),
        ("model", "First from Gemini."),
        ("user", "Again"),
    ]


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "code"), [("sk-not-a-key", "invalid_api_key"), (None, "missing_api_key")])
def test_a_bad_key_gets_an_error_frame_then_close_code_4401(
    ws_gateway: str, codex_channel: Channel, key: str | None, code: str
) -> None:
    with socket(ws_gateway, key) as ws:
        frame = orjson.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)

    assert frame["type"] == "error" and frame["status"] == 401
    assert frame["error"]["code"] == code
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_bad_frames_get_a_400_error_frame_and_the_socket_stays_usable(
    ws_gateway: str,
    alice: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    with socket(ws_gateway, alice.raw_key) as ws:
        ws.send("not json")
        not_json = turn(ws)
        send(ws, {"type": "response.append", "input": [user("Hi")]})
        append_first = turn(ws)
        send(ws, {"type": "response.create", "input": [user("Hi")]})
        no_model = turn(ws)
        send(ws, {"type": "response.create", "model": MODEL, "previous_response_id": "resp_elsewhere", "input": []})
        unknown_previous = turn(ws)
        send(ws, {"type": "session.update"})
        unknown_type = turn(ws)
        send(ws, {"type": "response.create", "model": MODEL, "input": [user("Hi")]})
        served = turn(ws)

    for frames, words in [
        (not_json, "not valid JSON"),
        (append_first, "the first frame must be 'response.create'"),
        (no_model, "'model' is required"),
        (unknown_previous, "names no response of this connection"),
        (unknown_type, "unsupported frame type 'session.update'"),
    ]:
        [frame] = frames
        assert (frame["type"], frame["status"], frame["error"]["type"]) == ("error", 400, "invalid_request_error")
        assert words in frame["error"]["message"]
    assert served[-1]["type"] == "response.completed"
    assert len(responses_upstream.requests) == 1


def test_routing_and_upstream_failures_are_error_frames_with_the_http_status(
    ws_gateway: str,
    alice: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    with socket(ws_gateway, alice.raw_key) as ws:
        send(ws, {"type": "response.create", "model": "no-such-model", "input": "Hi"})
        [missing] = turn(ws)
        responses_upstream.fail(429, "Rate limit reached", headers={"retry-after": "9"})
        send(ws, {"type": "response.create", "model": MODEL, "input": "Hi"})
        [limited] = turn(ws)

    assert (missing["status"], missing["error"]["code"]) == (404, "model_not_found")
    assert (limited["status"], limited["error"]["message"], limited["headers"]) == (
        429,
        "Rate limit reached",
        {"retry-after": "9"},
    )
    assert [(r.status_code, r.requested_model) for r in rows(1)] == [(429, MODEL)]


def test_a_stream_the_upstream_cuts_off_ends_the_turn_with_an_error_frame(
    ws_gateway: str,
    alice: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    responses_upstream.reply("Half an answer and then nothing.")
    responses_upstream.cut_off(after_events=4)
    with socket(ws_gateway, alice.raw_key) as ws:
        send(ws, {"type": "response.create", "model": MODEL, "input": "Hi"})
        frames = turn(ws)

    assert frames[0]["type"] == "response.created"
    assert frames[-1]["type"] == "error"  # the stream's own error event, else the socket's error frame
    assert not any(f["type"] == "response.completed" for f in frames)
    assert [r.status_code for r in rows(1)] == [502]


def test_after_a_failed_turn_the_retry_continues_from_the_last_good_response(
    ws_gateway: str,
    alice: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    with socket(ws_gateway, alice.raw_key) as ws:
        send(ws, {"type": "response.create", "model": MODEL, "input": [user("One")]})
        first = turn(ws)
        responses_upstream.fail(429, "Rate limit reached")
        again = {"type": "response.create", "previous_response_id": first[0]["response"]["id"], "input": [user("Two")]}
        send(ws, again)
        [failed] = turn(ws)
        responses_upstream.reset()
        _wait_out_cooldown(codex_channel)  # the 429 cooled the channel for the first backoff step (1 s)
        send(ws, again)
        retried = turn(ws)

    assert failed["status"] == 429
    assert retried[-1]["type"] == "response.completed"
    output = without_ids(first[-1]["response"]["output"])
    assert responses_upstream.last.json["input"] == [user("One"), *output, user("Two")]


def _wait_out_cooldown(channel: Channel) -> None:
    deadline = time.monotonic() + 5
    while cooldowns.cooling(channel.id, UPSTREAM_MODEL) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def test_charlie_cannot_reach_alices_model_over_the_socket(
    ws_gateway: str,
    charlie: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    with socket(ws_gateway, charlie.raw_key) as ws:
        send(ws, {"type": "response.create", "model": MODEL, "input": "Hi"})
        [frame] = turn(ws)

    assert (frame["status"], frame["error"]["code"]) == (404, "model_not_found")
    assert responses_upstream.requests == []


def test_a_client_that_hangs_up_mid_turn_leaves_a_499_row(
    ws_gateway: str,
    alice: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    responses_upstream.reply("A long answer that never ends.")
    gate = responses_upstream.hold_after_event(3)
    with socket(ws_gateway, alice.raw_key) as ws:
        send(ws, {"type": "response.create", "model": MODEL, "input": "Hi"})
        assert orjson.loads(ws.recv(timeout=10))["type"] == "response.created"

    [row] = rows(1)  # written while the upstream is still held: the socket's close ended the turn
    gate.release()
    assert (row.status_code, row.error_type, row.input_tokens) == (499, "client_disconnected", 0)


# --- the pure parts ---------------------------------------------------------------------------------


def test_sse_events_become_their_data_whatever_the_chunking() -> None:
    stream = (
        b': keep-alive\r\n\r\nevent: response.created\r\ndata: {"a": 1}\r\n\r\n'
        b'data: {"b":\ndata: 2}\n\nevent: ping\n\ndata: [DONE]\n\ndata: {"tail": true}'
    )
    whole, split = SseData(), SseData()

    assert whole.feed(stream) + whole.finish() == ['{"a": 1}', '{"b":\n2}', '{"tail": true}']
    assert [d for i in range(len(stream)) for d in split.feed(stream[i : i + 1])] + split.finish() == [
        '{"a": 1}',
        '{"b":\n2}',
        '{"tail": true}',
    ]


def test_a_pre_warm_for_a_model_the_key_may_not_use_is_refused(
    ws_gateway: str,
    alice: Persona,
    codex_channel: Channel,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    alice.key.allowed_models = ["other-*"]
    alice.key.save()
    with socket(ws_gateway, alice.raw_key) as ws:
        send(ws, {"type": "response.create", "model": MODEL, "input": [user("Hi")], "generate": False})
        [refused] = turn(ws)

    assert (refused["status"], refused["error"]["code"]) == (403, "model_not_allowed")
    assert responses_upstream.requests == []
