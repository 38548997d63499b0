"""The OpenAI Chat Completions relay end to end: the official SDK, the gateway over real HTTP, a fake upstream."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import openai
import orjson
import pytest
import zstandard
from django.db import connection
from django.utils import timezone

from channels_app.models import Channel
from tests.conftest import Persona
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.server import free_port
from tests.gateway.conftest import CLIENT_MODEL, UPSTREAM_MODEL, UPSTREAM_SECRET, Gateway
from tests.gateway.openai_clients_support import wait_for_row
from usage import recorder
from usage.models import RequestLog

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Say hello"}]
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SdkFor = Callable[..., openai.OpenAI]
Rows = Callable[[], list[RequestLog]]


@pytest.fixture
def logged_rows(gateway: Gateway) -> Callable[[], list[RequestLog]]:
    """Every usage row, oldest first, once the gateway is idle and the recorder has written them.

    A stream's row is queued when the gateway's generator ends, which may be just after the
    client has read the last event.
    """

    def rows() -> list[RequestLog]:
        gateway.watch.wait_idle()
        assert recorder.flush()
        return list(RequestLog.objects.order_by("id"))

    return rows


def stored_bodies(row: RequestLog) -> tuple[bytes, bytes]:
    """The request and response bodies kept for ``row``, checked to be zstd frames, decompressed."""
    request, response = bytes(row.body.request), bytes(row.body.response)
    assert request.startswith(ZSTD_MAGIC)
    assert response.startswith(ZSTD_MAGIC)
    decompressor = zstandard.ZstdDecompressor()
    return decompressor.decompress(request), decompressor.decompress(response)


def assert_sent_upstream_without_client_key(upstream: FakeOpenAIUpstream, client: Persona) -> None:
    """The upstream got its own key and the upstream model name, and nothing of the client's key."""
    sent = upstream.last
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.authorization == f"Bearer {UPSTREAM_SECRET}"
    assert sent.json["model"] == UPSTREAM_MODEL
    assert all(client.raw_key not in value for value in sent.headers.values())
    assert client.raw_key.encode() not in sent.body


@contextmanager
def database_write_lock() -> Iterator[None]:
    """Hold the write lock on the usage log from another connection, as a long migration or backup would."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        locker = sqlite3.connect(params["NAME"], isolation_level=None, timeout=5)
        try:
            locker.execute("BEGIN IMMEDIATE")
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        return
    import psycopg

    conninfo = {"dbname": params["NAME"], "user": params["USER"], "password": params["PASSWORD"]}
    conninfo |= {"host": params["HOST"], "port": str(params["PORT"] or "")}
    with psycopg.connect(**{k: v for k, v in conninfo.items() if v}, autocommit=True) as locker:
        try:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE usage_requestlog IN EXCLUSIVE MODE")
            yield
        finally:
            locker.execute("ROLLBACK")


# --- success ---------------------------------------------------------------------------------


def test_a_chat_completion_returns_the_upstream_reply(
    openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream, alice: Persona
) -> None:
    upstream.reply("Hello, alice. This is the fake upstream.")

    completion = openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello, alice. This is the fake upstream."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 19
    assert_sent_upstream_without_client_key(upstream, alice)
    assert upstream.last.json["messages"] == MESSAGES


def test_a_streamed_completion_returns_the_upstream_reply_in_chunks(
    openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream, alice: Persona
) -> None:
    upstream.reply("Streaming words one by one.")

    chunks = list(openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES, stream=True))

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Streaming words one by one."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(chunks) == 7  # role, five words, finish
    assert_sent_upstream_without_client_key(upstream, alice)
    assert upstream.last.json["stream"] is True


def test_bob_on_alices_team_is_served_by_the_same_channel(
    sdk_for: SdkFor, bob: Persona, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    completion = sdk_for(bob.raw_key).chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    assert completion.choices[0].message.content == upstream.script.text
    assert_sent_upstream_without_client_key(upstream, bob)


def test_the_first_streamed_chunk_reaches_the_client_before_the_upstream_finishes(
    sdk_for: SdkFor, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    gate = upstream.hold_after_first_chunk()
    # The timeout only turns a buffering gateway into a failure instead of a hang.
    stream = sdk_for(alice.raw_key, timeout=10.0).chat.completions.create(
        model=CLIENT_MODEL, messages=MESSAGES, stream=True
    )

    first = next(stream)

    assert first.choices[0].delta.role == "assistant"
    assert upstream.last.events_sent == 1
    assert not upstream.last.completed
    gate.release()
    rest = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == upstream.script.text
    assert upstream.last.completed


# --- usage rows ------------------------------------------------------------------------------


def test_a_completion_leaves_one_usage_row_with_its_tokens_route_and_timings(
    logged_rows: Rows, openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream, alice: Persona, channel: Channel
) -> None:
    upstream.reply("Counted.", prompt_tokens=40, completion_tokens=9, cached_tokens=16, reasoning_tokens=4)

    openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    [row] = logged_rows()
    assert (row.status_code, row.error_type, row.stream) == (200, "", False)
    assert (row.client_dialect, row.path) == ("openai-chat", "/v1/chat/completions")
    assert (row.requested_model, row.upstream_model) == (CLIENT_MODEL, UPSTREAM_MODEL)
    assert (row.team_id, row.api_key_id) == (alice.team.pk, alice.key.pk)
    assert (row.channel_id, row.channel_name, row.upstream_kind) == (channel.pk, "fake-openai", "openai-compatibility")
    assert row.key_display == alice.key.masked
    assert "…" in row.key_display and alice.raw_key not in row.key_display
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (40, 9, 49)
    assert (row.cached_tokens, row.reasoning_tokens) == (16, 4)
    assert row.latency_ms > 0 and row.ttfb_ms > 0
    request, response = stored_bodies(row)
    assert orjson.loads(request) == {"model": CLIENT_MODEL, "messages": MESSAGES}
    assert orjson.loads(response)["choices"][0]["message"]["content"] == "Counted."
    assert alice.raw_key.encode() not in request + response
    assert UPSTREAM_SECRET.encode() not in request + response


def test_a_streamed_completion_leaves_one_usage_row_with_the_tokens_of_its_usage_chunk(
    logged_rows: Rows, openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream, alice: Persona, channel: Channel
) -> None:
    upstream.reply("Streamed and counted.", prompt_tokens=30, completion_tokens=5, cached_tokens=8, reasoning_tokens=2)

    list(openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES, stream=True))

    [row] = logged_rows()
    assert (row.status_code, row.error_type, row.stream) == (200, "", True)
    assert (row.requested_model, row.upstream_model, row.channel_id) == (CLIENT_MODEL, UPSTREAM_MODEL, channel.pk)
    assert (row.team_id, row.api_key_id, row.key_display) == (alice.team.pk, alice.key.pk, alice.key.masked)
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (30, 5, 35)
    assert (row.cached_tokens, row.reasoning_tokens) == (8, 2)
    assert row.ttfb_ms > 0 and row.latency_ms >= row.ttfb_ms
    request, response = stored_bodies(row)
    assert orjson.loads(request)["stream"] is True
    assert b"Streamed" in response
    assert alice.raw_key.encode() not in request + response


def test_without_include_usage_the_client_gets_no_usage_chunk_but_the_row_has_the_tokens(
    logged_rows: Rows, openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.reply("No usage for you.", prompt_tokens=21, completion_tokens=4)

    chunks = list(openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES, stream=True))

    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert upstream.last.json["stream_options"] == {"include_usage": True}  # asked upstream for accounting
    [row] = logged_rows()
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (21, 4, 25)


def test_with_include_usage_the_client_gets_the_usage_chunk_last(
    logged_rows: Rows, openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.reply("Usage please.", prompt_tokens=21, completion_tokens=4, cached_tokens=3, reasoning_tokens=1)

    chunks = list(
        openai_client.chat.completions.create(
            model=CLIENT_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (21, 4, 25)
    assert last.usage.prompt_tokens_details is not None and last.usage.prompt_tokens_details.cached_tokens == 3
    assert all(chunk.choices for chunk in chunks[:-1])
    [row] = logged_rows()
    assert (row.input_tokens, row.cached_tokens, row.reasoning_tokens) == (21, 3, 1)


def test_a_request_completes_while_the_database_is_write_locked_and_its_row_lands_after(
    logged_rows: Rows, sdk_for: SdkFor, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    client = sdk_for(alice.raw_key, timeout=10.0)
    client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)  # warms the key and routing caches
    assert len(logged_rows()) == 1

    with database_write_lock():
        completion = client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)
        assert completion.choices[0].message.content == upstream.script.text
        assert recorder.recorder.backlog() == 1  # queued, waiting for the lock
        assert RequestLog.objects.count() == 1

    assert len(logged_rows()) == 2


def test_a_client_that_hangs_up_after_done_but_before_the_upstream_closes_leaves_a_200_row(
    logged_rows: Rows, openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.reply("Complete.", prompt_tokens=5, completion_tokens=1)
    upstream.hold_after_event(-1)  # the upstream keeps the body open after [DONE]

    chunks = list(openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES, stream=True))
    # The SDK stops at [DONE] and closes its connection; the gateway sees the client go.

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Complete."
    [row] = logged_rows()
    assert (row.status_code, row.error_type) == (200, "")
    assert (row.input_tokens, row.output_tokens) == (5, 1)


def test_a_client_that_hangs_up_mid_stream_leaves_a_499_row_with_what_was_seen(
    logged_rows: Rows, http: httpx.Client, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    upstream.hold_after_first_chunk()
    body = {"model": CLIENT_MODEL, "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {alice.raw_key}"}

    with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first.startswith("data: {")
    # Leaving the block closes the connection with the body unread.

    row = wait_for_row(status_code=499)
    assert (row.error_type, row.stream) == ("client_disconnected", True)
    assert (row.requested_model, row.upstream_model, row.channel_id) == (CLIENT_MODEL, UPSTREAM_MODEL, channel.pk)
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (0, 0, 0)  # no usage chunk arrived
    assert row.ttfb_ms > 0
    assert len(logged_rows()) == 1


# --- errors ----------------------------------------------------------------------------------


def test_a_request_without_a_key_is_refused_with_missing_api_key(
    http: httpx.Client, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    response = http.post("/v1/chat/completions", json={"model": CLIENT_MODEL, "messages": MESSAGES})

    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": "Missing API key",
            "type": "authentication_error",
            "param": None,
            "code": "missing_api_key",
        }
    }
    assert upstream.requests == []


def test_an_unknown_key_is_refused_with_invalid_api_key(sdk_for: SdkFor, channel: Channel) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk_for("sk-" + "0" * 32).chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


def test_a_disabled_key_is_refused_with_invalid_api_key(sdk_for: SdkFor, alice: Persona, channel: Channel) -> None:
    alice.key.enabled = False
    alice.key.save(update_fields=["enabled"])

    with pytest.raises(openai.AuthenticationError) as caught:
        sdk_for(alice.raw_key).chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    assert caught.value.code == "invalid_api_key"


def test_an_expired_key_is_refused_with_api_key_expired(sdk_for: SdkFor, alice: Persona, channel: Channel) -> None:
    alice.key.expires_at = timezone.now() - dt.timedelta(minutes=1)
    alice.key.save(update_fields=["expires_at"])

    with pytest.raises(openai.AuthenticationError) as caught:
        sdk_for(alice.raw_key).chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    assert caught.value.code == "api_key_expired"


def test_an_unknown_model_is_a_404_model_not_found(openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(model="gpt-nonexistent", messages=MESSAGES)

    assert caught.value.code == "model_not_found"
    assert upstream.requests == []


def test_a_model_outside_the_keys_allowed_models_is_a_403(
    sdk_for: SdkFor, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    alice.key.allowed_models = ["gpt-other-*"]
    alice.key.save(update_fields=["allowed_models"])

    with pytest.raises(openai.PermissionDeniedError) as caught:
        sdk_for(alice.raw_key).chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    assert caught.value.status_code == 403
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"model": "gpt-test", "messages": [', "not valid JSON"),
        (orjson.dumps({"model": CLIENT_MODEL}), "'messages' is required"),
    ],
    ids=["malformed-json", "missing-messages"],
)
def test_a_body_that_is_not_a_chat_request_is_a_400(
    http: httpx.Client, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream, content: bytes, reason: str
) -> None:
    response = http.post(
        "/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {alice.raw_key}", "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_request")
    assert reason in error["message"]
    assert upstream.requests == []


def test_an_upstream_500_is_a_502_carrying_the_upstream_message(
    logged_rows: Rows, openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.fail(500, "The server had an error while processing your request.", type_="server_error")

    with pytest.raises(openai.InternalServerError) as caught:
        openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.body["message"] == "The server had an error while processing your request."
    [row] = logged_rows()
    assert (row.status_code, row.error_message) == (502, "The server had an error while processing your request.")


def test_an_unreachable_upstream_is_a_502(logged_rows: Rows, openai_client: openai.OpenAI, channel: Channel) -> None:
    channel.base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    channel.save(update_fields=["base_url"])

    with pytest.raises(openai.InternalServerError) as caught:
        openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.type == "server_error"
    assert "unreachable" in caught.value.message
    [row] = logged_rows()
    assert row.status_code == 502


@pytest.mark.parametrize("stream", [False, True], ids=["once", "stream"])
def test_an_upstream_that_stalls_past_the_read_timeout_is_a_504(
    logged_rows: Rows,
    openai_client: openai.OpenAI,
    upstream: FakeOpenAIUpstream,
    short_read_timeout: float,
    stream: bool,
) -> None:
    upstream.stall()

    with pytest.raises(openai.InternalServerError) as caught:
        openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES, stream=stream)

    assert caught.value.status_code == 504
    assert caught.value.type in ("server_error", "timeout_error")
    assert "timed out" in caught.value.message or "stalled" in caught.value.message
    [row] = logged_rows()
    assert (row.status_code, row.stream) == (504, stream)


def test_an_upstream_429_is_a_429_with_its_retry_after(
    openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.fail(
        429,
        "Rate limit reached for gpt-upstream on requests per min (RPM): Limit 3, Used 3, Requested 1.",
        type_="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": "7"},
    )

    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["message"].startswith("Rate limit reached for gpt-upstream")


def test_an_upstream_400_is_a_400_with_its_message(openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream) -> None:
    message = "Invalid value for 'temperature': expected a number between 0 and 2."
    upstream.fail(400, message, code="invalid_value", param="temperature")

    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES, temperature=1.0)

    assert caught.value.status_code == 400
    assert caught.value.body["message"] == message


def test_a_stream_the_upstream_cuts_off_ends_with_an_error_the_sdk_raises(
    logged_rows: Rows, openai_client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.reply("This reply never finishes.")
    upstream.cut_off(after_events=3)
    received = []

    with pytest.raises(openai.APIError) as caught:
        for chunk in openai_client.chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES, stream=True):
            received.append(chunk)

    assert "cut off" in caught.value.message
    assert "".join(c.choices[0].delta.content or "" for c in received) == "This reply"
    [row] = logged_rows()
    assert (row.status_code, row.error_type, row.stream) == (502, "upstream_error", True)


# --- tenancy ---------------------------------------------------------------------------------


def test_charlie_cannot_reach_alices_channel(
    sdk_for: SdkFor, charlie: Persona, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk_for(charlie.raw_key).chat.completions.create(model=CLIENT_MODEL, messages=MESSAGES)

    assert caught.value.code == "model_not_found"
    assert upstream.requests == []


def test_charlie_lists_no_models_while_alice_lists_gpt_test(
    sdk_for: SdkFor, alice: Persona, charlie: Persona, channel: Channel
) -> None:
    assert [m.id for m in sdk_for(alice.raw_key).models.list()] == [CLIENT_MODEL]
    assert list(sdk_for(charlie.raw_key).models.list()) == []


def test_healthz_answers_200(http: httpx.Client) -> None:
    response = http.get("/healthz")

    assert response.status_code == 200
    answer = response.json()
    assert (answer["status"], answer["database"]) == ("ok", "ok")
    assert set(answer["recorder"]) == {"backlog", "written", "failures"}
    assert answer["recorder"]["backlog"] >= 0
