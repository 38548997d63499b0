"""The relay URLs are served by ``gateway.fastpath`` (no middleware, no request signals); the rest by Django."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_started
from pytest_django.fixtures import Settings

from accounts.models import ChannelGroup
from channels_app.models import Channel
from gateway.fastpath import RelayFastPath, is_relay_path
from tests.conftest import Persona
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.server import ThreadedServer
from tests.gateway.conftest import CLIENT_MODEL, UPSTREAM_MODEL, Gateway
from tests.gateway.openai_clients_support import wait_for_row

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Say hello"}]
CHAT = {"model": CLIENT_MODEL, "messages": MESSAGES}


@pytest.fixture
def started_paths() -> Iterator[list[str]]:
    """The path of every request Django's handler starts (``request_started``), in any thread."""
    paths: list[str] = []

    def started(sender: Any, scope: dict[str, Any] | None = None, **kwargs: Any) -> None:
        paths.append(scope["path"] if scope else "?")

    request_started.connect(started, weak=False, dispatch_uid="test_fastpath")
    yield paths
    request_started.disconnect(dispatch_uid="test_fastpath")


def _auth(persona: Persona) -> dict[str, str]:
    return {"Authorization": f"Bearer {persona.raw_key}"}


@pytest.mark.parametrize(
    ("path", "relay"),
    [
        ("/v1/chat/completions", True),
        ("/v1beta/models/gemini-pro:generateContent", True),
        ("/healthz", True),
        ("/pro/v1/chat/completions", True),
        ("/team/pro/v1beta/models", True),
        ("/v1", False),
        ("/healthz/", False),
        ("/admin/", False),
        ("/admin/v1/chat/completions", False),
        ("/static/v1/app.js", False),
        ("/static/admin/css/base.css", False),
        ("/", False),
    ],
)
def test_only_the_relay_urls_take_the_fast_path(path: str, relay: bool) -> None:
    assert is_relay_path(path) is relay


def test_a_relay_request_starts_no_django_request_but_the_admin_does(
    gateway: Gateway, http: httpx.Client, alice: Persona, channel: Channel, started_paths: list[str]
) -> None:
    answer = http.post("/v1/chat/completions", json=CHAT, headers=_auth(alice))
    health = http.get("/healthz")
    login = http.get("/admin/login/")

    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert login.status_code == 200 and b"csrfmiddlewaretoken" in login.content  # the middleware ran
    assert started_paths == ["/admin/login/"]


def test_the_admin_logs_in_through_django(gateway: Gateway, http: httpx.Client, alice: Persona) -> None:
    form = http.get("/admin/login/")
    token = http.cookies["csrftoken"]

    done = http.post(
        "/admin/login/?next=/admin/",
        data={"username": alice.user.username, "password": alice.password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{gateway.url}/admin/login/"},
    )

    assert form.status_code == 200
    assert done.status_code == 302 and done.headers["location"] == "/admin/"
    assert http.get("/admin/").status_code == 200


def test_a_stream_reaches_the_client_chunk_by_chunk(
    gateway: Gateway, http: httpx.Client, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    gate = upstream.hold_after_first_chunk()

    with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=_auth(alice)) as response:
        lines = response.iter_lines()
        first = next(lines)  # arrives while the upstream still holds the rest
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert first.startswith("data: {") and not gate.released
        gate.release()
        rest = [line for line in lines if line]

    assert rest[-1] == "data: [DONE]"
    assert wait_for_row(status_code=200).stream is True


def test_a_client_that_hangs_up_mid_stream_leaves_a_499_row_and_gives_its_slot_back(
    gateway: Gateway, http: httpx.Client, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    alice.key.concurrency_limit = 1
    alice.key.save()
    upstream.hold_after_first_chunk()

    with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=_auth(alice)) as response:
        assert response.status_code == 200
        assert next(response.iter_lines()).startswith("data: {")
    # Leaving the block closes the connection with the body unread.

    row = wait_for_row(status_code=499)
    assert (row.error_type, row.stream, row.upstream_model) == ("client_disconnected", True, UPSTREAM_MODEL)
    upstream.reset()  # streams are no longer held
    again = http.post("/v1/chat/completions", json=CHAT, headers=_auth(alice))
    assert again.status_code == 200  # the only slot was given back


def test_a_client_that_hangs_up_before_the_upstream_answers_frees_its_slot_and_the_gateway_serves_on(
    gateway: Gateway, http: httpx.Client, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream
) -> None:
    alice.key.concurrency_limit = 1
    alice.key.save()
    upstream.stall()

    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=CHAT, headers=_auth(alice), timeout=0.5)

    row = wait_for_row(status_code=499)  # the gateway let go of the upstream call: nothing was marked failed
    assert (row.error_type, row.stream) == ("client_disconnected", False)
    upstream.reset()
    answers = [http.post("/v1/chat/completions", json=CHAT, headers=_auth(alice)) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text  # the hung-up request's slot came back
    assert wait_for_row(status_code=200).stream is False


def test_relay_urls_are_resolved_once_and_each_path_keeps_its_own_arguments() -> None:
    from django.urls import Resolver404

    from gateway import fastpath

    first = fastpath._resolve("/v1beta/models/gemini-pro:generateContent")
    other = fastpath._resolve("/v1beta/models/gemini-flash:streamGenerateContent")
    assert fastpath._resolve("/v1beta/models/gemini-pro:generateContent") is first
    assert first.kwargs != other.kwargs and "gemini-pro" in str(first.kwargs) and "gemini-flash" in str(other.kwargs)
    with pytest.raises(Resolver404):
        fastpath._resolve("/v1/no-such-endpoint")
    assert all(path != "/v1/no-such-endpoint" for _, path in fastpath._resolved)


def test_a_body_over_the_limit_is_refused_with_413_in_the_clients_dialect(
    gateway: Gateway, http: httpx.Client, alice: Persona, channel: Channel, settings: Settings
) -> None:
    settings.CLIRELAY_MAX_BODY_BYTES = 1000
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    anthropic_client = anthropic.Anthropic(base_url=gateway.url, api_key=alice.raw_key, max_retries=0)

    declared = http.post("/v1/chat/completions", json=big, headers=_auth(alice))
    chunked = http.post(
        "/v1/chat/completions",
        content=iter([b'{"model": "gpt-test", ', b'"messages": [], "pad": "' + b"x" * 5000 + b'"}']),
        headers={**_auth(alice), "Content-Type": "application/json"},
    )
    with pytest.raises(anthropic.APIStatusError) as refused:
        anthropic_client.messages.create(model=CLIENT_MODEL, max_tokens=5, messages=big["messages"])

    assert "content-length" not in chunked.request.headers  # sent chunked: only the count tells
    for answer in (declared, chunked):
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "request_too_large"
        assert "1000 bytes" in answer.json()["error"]["message"]
    assert refused.value.status_code == 413
    assert refused.value.body["type"] == "error"  # Anthropic's envelope, as the relay writes it


def test_an_unknown_relay_path_is_a_json_404(gateway: Gateway, http: httpx.Client, alice: Persona) -> None:
    for answer in (
        http.post("/v1/nothing/here", json={}, headers=_auth(alice)),
        http.get("/v1beta/nothing"),
        http.get("/pro/v1/nothing"),  # gateway.namespaces.dispatch finds nothing behind the namespace
    ):
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/json"
        error = answer.json()["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "not_found")


def test_a_method_the_endpoint_does_not_take_is_refused_by_django_ninja(gateway: Gateway, http: httpx.Client) -> None:
    answer = http.get("/v1/chat/completions")

    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"


def test_a_host_not_in_allowed_hosts_is_refused(
    gateway: Gateway, http: httpx.Client, alice: Persona, channel: Channel, settings: Settings
) -> None:
    settings.ALLOWED_HOSTS = ["relay.example"]

    refused = http.post("/v1/chat/completions", json=CHAT, headers={**_auth(alice), "Host": "evil.example"})
    allowed = http.post("/v1/chat/completions", json=CHAT, headers={**_auth(alice), "Host": "relay.example"})

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "bad_host"
    assert allowed.status_code == 200


def test_namespaced_urls_take_the_fast_path_into_their_group(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    channel: Channel,
    upstream: FakeOpenAIUpstream,
    started_paths: list[str],
) -> None:
    group = ChannelGroup.objects.create(team=alice.team, name="pro", slug="pro")
    group.channels.add(channel)

    inside = http.post("/pro/v1/chat/completions", json=CHAT, headers=_auth(alice))
    nowhere = http.post("/nowhere/v1/chat/completions", json=CHAT, headers=_auth(alice))
    models = http.get("/pro/v1/models", headers=_auth(alice))

    assert inside.status_code == 200 and upstream.last.json["model"] == UPSTREAM_MODEL
    assert wait_for_row(status_code=200).group_id == group.pk
    assert (nowhere.status_code, nowhere.json()["error"]["code"]) == (404, "route_group_unavailable")
    assert [m["id"] for m in models.json()["data"]] == [CLIENT_MODEL]
    assert started_paths == []


def test_with_the_fast_path_off_every_request_goes_through_django(
    gateway: Gateway, http: httpx.Client, alice: Persona, channel: Channel, settings: Settings, started_paths: list[str]
) -> None:
    settings.CLIRELAY_FAST_PATH = False

    answer = http.post("/v1/chat/completions", json=CHAT, headers=_auth(alice))
    missing = http.get("/v1/nothing")

    assert answer.status_code == 200
    assert missing.status_code == 404 and "application/json" not in missing.headers["content-type"]
    assert started_paths == ["/v1/chat/completions", "/v1/nothing"]


def test_a_view_that_raises_is_logged_and_answered_with_a_json_500(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway import relay

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the relay broke")

    monkeypatch.setattr(relay, "handle", broken)
    server = ThreadedServer(RelayFastPath(ASGIHandler()), name="fastpath-500").start()
    try:
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=10)
    finally:
        server.stop()

    assert answer.status_code == 500
    assert answer.json()["error"]["type"] == "server_error"
    [record] = [r for r in caplog.records if r.name == "gateway.fastpath"]
    assert record.exc_info is not None and "the relay broke" in str(record.exc_info[1])


def test_static_files_are_still_served_by_whitenoise(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "probe.txt").write_text("static ok")
    settings.STATIC_ROOT = tmp_path  # WhiteNoise indexes it when the app is built
    server = ThreadedServer(RelayFastPath(ASGIHandler()), name="fastpath-static").start()
    try:
        answer = httpx.get(f"{server.url}/static/probe.txt", timeout=10)
    finally:
        server.stop()

    assert (answer.status_code, answer.text) == (200, "static ok")
