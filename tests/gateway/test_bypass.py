"""Quota, key and model restrictions hold on every endpoint: each is tried, plain and under a group namespace.

The endpoints are the generation ones (OpenAI chat, Responses over HTTP and WebSocket, Anthropic
messages, Gemini generate/stream under ``/v1beta`` and ``/v1``, images), each also as
``/pro/v1…`` (a group the key may use), plus the listing and token-counting ones. Every refusal is
checked in the endpoint's own envelope with ``X-Relay-Error-Code``, and the upstream must have
received nothing. One fake upstream (the fake OpenAI chat API, with the fake Images API mounted
beside it) serves every channel; the channels tell apart by the secret the upstream receives.

alice's team has three channels serving the same models: ``pro`` (group pro, priority 1), ``free``
(group free, priority 100) and ``loose`` (no group, prefix ``loose``, priority 100), so a key confined
to ``pro`` that leaked would be served by a heavier channel first. charlie's team has a group named
``free`` too, with no channel.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from accounts.limits import Limiter
from accounts.models import ApiKeyUsageCounter, ChannelGroup, PathRoute
from channels_app.models import Channel, ProviderKind
from tests.conftest import Persona
from tests.fakes.image_fakes import PNG_B64, FakeOpenAIImagesUpstream
from tests.fakes.openai_upstream import FakeOpenAIUpstream, RecordedRequest
from tests.fakes.server import ThreadedServer
from tests.fakes.upstream import RecordedRequest as ImagesRequest
from tests.gateway.conftest import Gateway
from tests.gateway.isolated_limits import isolated_limiter

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED = "gpt-4o-mini"
DENIED = "o3-secret"
FREE_ONLY = "gpt-4o-free-only"  # allowed by PATTERNS, served only by the free group
PATTERNS = ["gpt-4o*"]
SECRETS = {"pro": "sk-upstream-pro", "free": "sk-upstream-free", "loose": "sk-upstream-loose"}
MESSAGES = [{"role": "user", "content": "hi"}]
GEMINI_CONTENTS = [{"role": "user", "parts": [{"text": "hi"}]}]
ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
GOOGLE_STATUSES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}


def upstream_name(model: str) -> str:
    """The name the channels' upstream knows a client model by (each channel aliases it)."""
    return f"up-{model}"


# --- the upstream: fake chat API, fake Images API beside it ----------------------------------------


class ChatAndImages:
    """One ASGI app: ``…/images/generations`` goes to the fake Images API, everything else to the chat fake."""

    def __init__(self, chat: FakeOpenAIUpstream, images: FakeOpenAIImagesUpstream) -> None:
        self.chat = chat
        self.images = images

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = self.images if scope.get("path", "").endswith("/images/generations") else self.chat
        await app(scope, receive, send)


@dataclass
class Upstream:
    """What every channel's upstream received."""

    chat: FakeOpenAIUpstream
    images: FakeOpenAIImagesUpstream
    base_url: str

    @property
    def requests(self) -> list[RecordedRequest | ImagesRequest]:
        return [*self.chat.requests, *self.images.requests]

    def secrets_seen(self) -> list[str]:
        return [r.headers.get("authorization", "").removeprefix("Bearer ") for r in self.requests]


@pytest.fixture(scope="module")
def images_fake() -> FakeOpenAIImagesUpstream:
    return FakeOpenAIImagesUpstream()  # served through ChatAndImages, never on its own


@pytest.fixture(scope="module")
def upstream_root(fake_upstream_server: FakeOpenAIUpstream, images_fake: FakeOpenAIImagesUpstream) -> Iterator[str]:
    server = ThreadedServer(ChatAndImages(fake_upstream_server, images_fake), name="fake-chat-and-images").start()
    yield server.url
    server.stop()


@pytest.fixture
def sent(upstream: FakeOpenAIUpstream, images_fake: FakeOpenAIImagesUpstream, upstream_root: str) -> Iterator[Upstream]:
    images_fake.reset()
    yield Upstream(upstream, images_fake, f"{upstream_root}/v1")
    images_fake.reset()


# --- the limiter: the settings' backend, counters of this test only --------------------------------


@pytest.fixture(autouse=True)
def own_limiter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Limiter]:
    """A fresh limiter per test (see isolated_limits): no counter of another test or run meets this one's."""
    with isolated_limiter(monkeypatch, "bypass") as made:
        yield made


# --- alice's channels and groups, charlie's look-alike group ---------------------------------------


@dataclass
class World:
    pro: ChannelGroup
    free: ChannelGroup
    channels: dict[str, Channel] = field(default_factory=dict)


def _channel(persona: Persona, sent: Upstream, name: str, models: list[str], **fields: Any) -> Channel:
    return Channel.objects.create(
        team=persona.team,
        kind=ProviderKind.OPENAI_COMPATIBILITY,
        name=name,
        base_url=sent.base_url,
        secret=SECRETS[name],
        served_models=[{"name": upstream_name(m), "alias": m} for m in models],
        **fields,
    )


@pytest.fixture
def world(alice: Persona, charlie: Persona, sent: Upstream) -> World:
    pro = ChannelGroup.objects.create(team=alice.team, name="pro", slug="pro")
    free = ChannelGroup.objects.create(team=alice.team, name="free", slug="free")
    ChannelGroup.objects.create(team=charlie.team, name="free", slug="free")
    world = World(pro=pro, free=free)
    world.channels["pro"] = _channel(alice, sent, "pro", [ALLOWED, DENIED], priority=1)
    world.channels["free"] = _channel(alice, sent, "free", [ALLOWED, DENIED, FREE_ONLY], priority=100)
    world.channels["loose"] = _channel(alice, sent, "loose", [ALLOWED, DENIED], priority=100, prefix="loose")
    pro.channels.add(world.channels["pro"])
    free.channels.add(world.channels["free"])
    PathRoute.objects.create(team=alice.team, path="/team/free", group=free)
    PathRoute.objects.create(team=alice.team, path="/team/pro", group=pro, fallback=PathRoute.Fallback.DEFAULT)
    return world


def _set(persona: Persona, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(persona.key, name, value)
    persona.key.save()


def _confine_to_pro(persona: Persona, world: World) -> None:
    persona.key.allowed_channel_groups.add(world.pro)


# --- endpoints -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One generation endpoint: where it lives, its dialect, and a body asking for a model."""

    name: str
    dialect: str  # openai | anthropic | gemini
    path: str  # "{model}" is replaced for Gemini, whose model is in the URL
    body: Callable[[str], dict[str, Any]]

    def call(self, http: httpx.Client, key: str, model: str, namespace: str = "") -> httpx.Response:
        """POST to the endpoint with the key where this dialect's clients put it; the whole body read."""
        if self.dialect == "anthropic":
            headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        elif self.dialect == "gemini":
            headers = {"x-goog-api-key": key}
        else:
            headers = {"Authorization": f"Bearer {key}"}
        return http.post(namespace + self.path.format(model=model), json=self.body(model), headers=headers)


def _chat(stream: bool) -> Callable[[str], dict[str, Any]]:
    return lambda model: {"model": model, "messages": MESSAGES, "stream": stream}


def _responses(stream: bool) -> Callable[[str], dict[str, Any]]:
    return lambda model: {"model": model, "input": "hi", "stream": stream}


def _messages(stream: bool) -> Callable[[str], dict[str, Any]]:
    return lambda model: {"model": model, "max_tokens": 16, "messages": MESSAGES, "stream": stream}


def _gemini(model: str) -> dict[str, Any]:
    # The body names an allowed model: the one in the URL must be the one checked and served.
    return {"model": ALLOWED, "contents": GEMINI_CONTENTS}


ENDPOINTS = [
    Endpoint("chat", "openai", "/v1/chat/completions", _chat(False)),
    Endpoint("chat-stream", "openai", "/v1/chat/completions", _chat(True)),
    Endpoint("responses", "openai", "/v1/responses", _responses(False)),
    Endpoint("responses-stream", "openai", "/v1/responses", _responses(True)),
    Endpoint("messages", "anthropic", "/v1/messages", _messages(False)),
    Endpoint("messages-stream", "anthropic", "/v1/messages", _messages(True)),
    Endpoint("v1beta-generateContent", "gemini", "/v1beta/models/{model}:generateContent", _gemini),
    Endpoint("v1beta-streamGenerateContent", "gemini", "/v1beta/models/{model}:streamGenerateContent?alt=sse", _gemini),
    Endpoint("v1-generateContent", "gemini", "/v1/models/{model}:generateContent", _gemini),
    Endpoint("v1-streamGenerateContent", "gemini", "/v1/models/{model}:streamGenerateContent", _gemini),
    Endpoint("images", "openai", "/v1/images/generations", lambda model: {"model": model, "prompt": "a cube"}),
]
CHAT = ENDPOINTS[0]
GEMINI = ENDPOINTS[6]
NAMESPACES = ["", "/pro"]
every_endpoint = pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
plain_and_grouped = pytest.mark.parametrize("namespace", NAMESPACES, ids=["v1", "group"])


def assert_refused(response: httpx.Response, dialect: str, status: int, code: str) -> None:
    """``response`` is the relay's refusal ``code`` in ``dialect``'s envelope, with its header."""
    assert response.status_code == status, response.text
    assert response.headers["x-relay-error-code"] == code
    body = response.json()
    if dialect == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == ANTHROPIC_TYPES[status], body
    elif dialect == "gemini":
        assert (body["error"]["code"], body["error"]["status"]) == (status, GOOGLE_STATUSES[status]), body
    else:
        assert body["error"]["code"] == code, body
    if status == 429:
        assert int(response.headers["retry-after"]) >= 1


def assert_served(response: httpx.Response, endpoint: Endpoint) -> None:
    assert response.status_code == 200, response.text
    if endpoint.name == "images":
        assert response.json()["data"][0]["b64_json"] == PNG_B64
    elif "stream" in endpoint.name.lower():
        assert response.content
    else:
        assert response.json()


# --- the Responses WebSocket --------------------------------------------------------------------


WS_TERMINAL = frozenset(("response.completed", "response.incomplete", "response.failed", "error"))


def ws_socket(url: str, key: str, path: str = "/v1/responses") -> ClientConnection:
    return connect(f"{url}{path}", additional_headers={"Authorization": f"Bearer {key}"}, proxy=None, open_timeout=10)


def ws_turn(ws: ClientConnection, model: str) -> list[dict[str, Any]]:
    """Send one ``response.create`` and read its frames up to the terminal one (an error frame included)."""
    ws.send(orjson.dumps({"type": "response.create", "model": model, "input": "hi"}).decode())
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] not in WS_TERMINAL:
        frames.append(orjson.loads(ws.recv(timeout=10)))
    assert all(f.get("status") != 500 for f in frames), frames
    return frames


def assert_ws_refused(frames: list[dict[str, Any]], status: int, code: str) -> None:
    assert len(frames) == 1, f"served instead of refused: {[f['type'] for f in frames]}"
    frame = frames[0]
    assert (frame["type"], frame["status"], frame["error"]["code"]) == ("error", status, code), frame
    if status == 429:
        assert int(frame["headers"]["retry-after"]) >= 1


# ================================================================================================
# The endpoints are reached at all (so each refusal below is the policy's, not a wrong URL)
# ================================================================================================


@every_endpoint
@plain_and_grouped
def test_an_allowed_model_reaches_the_upstream_on_every_endpoint(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    world: World,
    sent: Upstream,
    endpoint: Endpoint,
    namespace: str,
) -> None:
    _set(alice, allowed_models=PATTERNS)

    assert_served(endpoint.call(http, alice.raw_key, ALLOWED, namespace), endpoint)

    [request] = sent.requests
    assert request.json["model"] == upstream_name(ALLOWED)
    if namespace == "/pro":
        assert sent.secrets_seen() == [SECRETS["pro"]]


def test_an_allowed_model_reaches_the_upstream_over_the_websocket(
    gateway: Gateway, ws_gateway: str, alice: Persona, world: World, sent: Upstream
) -> None:
    _set(alice, allowed_models=PATTERNS)

    with ws_socket(ws_gateway, alice.raw_key) as ws:
        frames = ws_turn(ws, ALLOWED)

    assert frames[-1]["type"] == "response.completed"
    assert [r.json["model"] for r in sent.requests] == [upstream_name(ALLOWED)]


# ================================================================================================
# (1) allowed models
# ================================================================================================


@every_endpoint
@plain_and_grouped
def test_a_model_outside_the_keys_allowed_models_is_a_403_on_every_endpoint(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    world: World,
    sent: Upstream,
    endpoint: Endpoint,
    namespace: str,
) -> None:
    _set(alice, allowed_models=PATTERNS)

    answer = endpoint.call(http, alice.raw_key, DENIED, namespace)

    assert_refused(answer, endpoint.dialect, 403, "model_not_allowed")
    assert sent.requests == []


def test_a_model_outside_the_keys_allowed_models_is_an_error_frame_on_the_websocket(
    gateway: Gateway, ws_gateway: str, alice: Persona, world: World, sent: Upstream
) -> None:
    _set(alice, allowed_models=PATTERNS)

    with ws_socket(ws_gateway, alice.raw_key) as ws:
        refused = ws_turn(ws, DENIED)
        served = ws_turn(ws, ALLOWED)  # the socket stays usable
        refused_again = ws_turn(ws, DENIED)

    assert_ws_refused(refused, 403, "model_not_allowed")
    assert_ws_refused(refused_again, 403, "model_not_allowed")
    assert served[-1]["type"] == "response.completed"
    assert [r.json["model"] for r in sent.requests] == [upstream_name(ALLOWED)]


@pytest.mark.parametrize(
    "spelling",
    [f"{DENIED}(high)", f"{DENIED}(8192)", DENIED.upper(), f"loose/{DENIED}"],
    ids=["thinking-level", "thinking-budget", "upper-case", "channel-prefix"],
)
@pytest.mark.parametrize("endpoint", [CHAT, GEMINI, ENDPOINTS[2], ENDPOINTS[4]], ids=lambda e: e.name)
def test_other_spellings_of_a_disallowed_model_are_refused_too(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    world: World,
    sent: Upstream,
    endpoint: Endpoint,
    spelling: str,
) -> None:
    _set(alice, allowed_models=PATTERNS)

    answer = endpoint.call(http, alice.raw_key, spelling)

    assert_refused(answer, endpoint.dialect, 403, "model_not_allowed")
    assert sent.requests == []


@pytest.mark.parametrize("prefix", ["/v1beta", "/v1", "/pro/v1beta", "/pro/v1"])
def test_the_model_in_a_gemini_url_is_the_one_checked_and_served_whatever_the_body_says(
    gateway: Gateway, http: httpx.Client, alice: Persona, world: World, sent: Upstream, prefix: str
) -> None:
    _set(alice, allowed_models=PATTERNS)
    headers = {"x-goog-api-key": alice.raw_key}

    denied = http.post(
        f"{prefix}/models/{DENIED}:generateContent",
        json={"model": ALLOWED, "contents": GEMINI_CONTENTS},
        headers=headers,
    )
    via_models_prefix = http.post(
        f"{prefix}/models/models/{DENIED}:generateContent", json={"contents": GEMINI_CONTENTS}, headers=headers
    )
    served = http.post(
        f"{prefix}/models/{ALLOWED}:generateContent",
        json={"model": DENIED, "contents": GEMINI_CONTENTS},
        headers=headers,
    )

    assert_refused(denied, "gemini", 403, "model_not_allowed")
    assert_refused(via_models_prefix, "gemini", 403, "model_not_allowed")
    assert served.status_code == 200, served.text
    assert [r.json["model"] for r in sent.requests] == [upstream_name(ALLOWED)]


# ================================================================================================
# (2) quotas and rate limits
# ================================================================================================

LIMITS = {
    # limit: (key fields, lifetime usage already counted, requests spent first, code)
    "rpm": ({"rpm_limit": 1}, {}, 1, "rpm_limit_exceeded"),
    "daily": ({"daily_request_limit": 1}, {}, 1, "daily_limit_exceeded"),
    "total": ({"total_request_limit": 5}, {"total_requests": 5}, 0, "total_quota_exceeded"),
    "tokens": ({"token_quota": 1000}, {"total_tokens": 1000}, 0, "token_quota_exceeded"),
}


def _exhaust(http: httpx.Client, persona: Persona, limit: str) -> None:
    """Give the key ``limit`` and use it up: lifetime usage on record, or real requests spent."""
    fields, usage, spend, _ = LIMITS[limit]
    if usage:
        ApiKeyUsageCounter.objects.create(api_key=persona.key, **usage)
    _set(persona, **fields)
    for _ in range(spend):
        assert_served(CHAT.call(http, persona.raw_key, ALLOWED), CHAT)


@pytest.mark.parametrize("limit", LIMITS)
@every_endpoint
@plain_and_grouped
def test_an_exhausted_limit_is_a_429_on_every_endpoint_and_nothing_reaches_the_upstream(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    world: World,
    sent: Upstream,
    endpoint: Endpoint,
    namespace: str,
    limit: str,
) -> None:
    _exhaust(http, alice, limit)
    before = len(sent.requests)

    answer = endpoint.call(http, alice.raw_key, ALLOWED, namespace)

    assert_refused(answer, endpoint.dialect, 429, LIMITS[limit][3])
    assert len(sent.requests) == before


@pytest.mark.parametrize("limit", LIMITS)
def test_an_exhausted_limit_is_a_429_error_frame_on_the_websocket(
    gateway: Gateway, http: httpx.Client, ws_gateway: str, alice: Persona, world: World, sent: Upstream, limit: str
) -> None:
    _exhaust(http, alice, limit)
    before = len(sent.requests)

    with ws_socket(ws_gateway, alice.raw_key) as ws:
        frames = ws_turn(ws, ALLOWED)

    assert_ws_refused(frames, 429, LIMITS[limit][3])
    assert len(sent.requests) == before


# ================================================================================================
# (3) disabled and expired keys
# ================================================================================================

KEY_STATES = {
    "disabled": ({"enabled": False}, "invalid_api_key"),
    "expired": ({"expires_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}, "api_key_expired"),
}


@pytest.mark.parametrize("state", KEY_STATES)
@every_endpoint
@plain_and_grouped
def test_a_disabled_or_expired_key_is_a_401_on_every_endpoint(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    world: World,
    sent: Upstream,
    endpoint: Endpoint,
    namespace: str,
    state: str,
) -> None:
    fields, code = KEY_STATES[state]
    _set(alice, **fields)

    answer = endpoint.call(http, alice.raw_key, ALLOWED, namespace)

    assert_refused(answer, endpoint.dialect, 401, code)
    assert sent.requests == []


@pytest.mark.parametrize("state", KEY_STATES)
def test_a_disabled_or_expired_key_cannot_open_the_websocket(
    gateway: Gateway, ws_gateway: str, alice: Persona, world: World, sent: Upstream, state: str
) -> None:
    fields, code = KEY_STATES[state]
    _set(alice, **fields)

    with ws_socket(ws_gateway, alice.raw_key) as ws:
        frame = orjson.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)

    assert (frame["type"], frame["status"], frame["error"]["code"]) == ("error", 401, code)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert sent.requests == []


READS = [
    ("openai", "get", "/v1/models"),
    ("anthropic", "get", "/v1/models"),
    ("openai", "get", f"/v1/models/{ALLOWED}"),
    ("gemini", "get", "/v1beta/models"),
    ("gemini", "get", f"/v1beta/models/{ALLOWED}"),
    ("anthropic", "post", "/v1/messages/count_tokens"),
    ("gemini", "post", f"/v1beta/models/{ALLOWED}:countTokens"),
    ("gemini", "post", f"/v1/models/{ALLOWED}:countTokens"),
]


def _read(http: httpx.Client, key: str, dialect: str, method: str, path: str) -> httpx.Response:
    if dialect == "anthropic":
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        body: dict[str, Any] = {"model": ALLOWED, "messages": MESSAGES}
    else:
        headers = {"x-goog-api-key": key} if dialect == "gemini" else {"Authorization": f"Bearer {key}"}
        body = {"contents": GEMINI_CONTENTS}
    if method == "get":
        return http.get(path, headers=headers)
    return http.post(path, json=body, headers=headers)


@pytest.mark.parametrize("state", KEY_STATES)
@pytest.mark.parametrize(("dialect", "method", "path"), READS, ids=[f"{d}-{m}-{p}" for d, m, p in READS])
@plain_and_grouped
def test_a_disabled_or_expired_key_cannot_list_models_or_count_tokens(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    world: World,
    sent: Upstream,
    dialect: str,
    method: str,
    path: str,
    namespace: str,
    state: str,
) -> None:
    fields, code = KEY_STATES[state]
    _set(alice, **fields)

    answer = _read(http, alice.raw_key, dialect, method, namespace + path)

    assert_refused(answer, dialect, 401, code)
    assert sent.requests == []


# ================================================================================================
# (4) groups, namespaces and teams
# ================================================================================================


@every_endpoint
def test_a_key_confined_to_a_group_is_served_only_by_that_groups_channels(
    gateway: Gateway, http: httpx.Client, alice: Persona, world: World, sent: Upstream, endpoint: Endpoint
) -> None:
    _confine_to_pro(alice, world)

    for namespace in ("", "/pro", "/team/pro"):
        assert_served(endpoint.call(http, alice.raw_key, ALLOWED, namespace), endpoint)

    assert sent.secrets_seen() == [SECRETS["pro"]] * 3


@every_endpoint
def test_a_key_confined_to_a_group_cannot_use_another_groups_namespace(
    gateway: Gateway, http: httpx.Client, alice: Persona, world: World, sent: Upstream, endpoint: Endpoint
) -> None:
    _confine_to_pro(alice, world)

    answer = endpoint.call(http, alice.raw_key, ALLOWED, "/free")

    assert_refused(answer, endpoint.dialect, 403, "channel_group_forbidden")
    assert sent.requests == []


@pytest.mark.parametrize(
    "namespace",
    ["/free", "/FREE", "/loose", "/default", "/team/free"],
    ids=["group", "group-upper-case", "prefix-group", "default-group", "path-route"],
)
@pytest.mark.parametrize("endpoint", [CHAT, GEMINI], ids=lambda e: e.name)
def test_every_kind_of_namespace_outside_the_keys_groups_is_forbidden(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    world: World,
    sent: Upstream,
    endpoint: Endpoint,
    namespace: str,
) -> None:
    _confine_to_pro(alice, world)

    answer = endpoint.call(http, alice.raw_key, ALLOWED, namespace)

    assert_refused(answer, endpoint.dialect, 403, "channel_group_forbidden")
    assert sent.requests == []


@every_endpoint
@pytest.mark.parametrize("namespace", ["", "/pro", "/team/pro"], ids=["v1", "group", "path-route-fallback-default"])
def test_a_model_served_only_outside_the_keys_groups_does_not_exist_for_it(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    world: World,
    sent: Upstream,
    endpoint: Endpoint,
    namespace: str,
) -> None:
    _confine_to_pro(alice, world)

    answer = endpoint.call(http, alice.raw_key, FREE_ONLY, namespace)

    assert_refused(answer, endpoint.dialect, 404, "model_not_found")
    assert sent.requests == []


@pytest.mark.parametrize("endpoint", [CHAT, GEMINI, ENDPOINTS[-1]], ids=lambda e: e.name)
def test_a_key_limited_to_channels_cannot_reach_another_channel_through_a_namespace(
    gateway: Gateway, http: httpx.Client, alice: Persona, world: World, sent: Upstream, endpoint: Endpoint
) -> None:
    alice.key.allowed_channels.add(world.channels["pro"])

    outside = endpoint.call(http, alice.raw_key, ALLOWED, "/free")
    assert_served(endpoint.call(http, alice.raw_key, ALLOWED), endpoint)

    assert_refused(outside, endpoint.dialect, 404, "model_not_found")
    assert sent.secrets_seen() == [SECRETS["pro"]]


def test_a_key_confined_to_a_group_is_served_only_by_that_group_over_the_websocket(
    gateway: Gateway, ws_gateway: str, alice: Persona, world: World, sent: Upstream
) -> None:
    _confine_to_pro(alice, world)

    with ws_socket(ws_gateway, alice.raw_key) as ws:
        served = [ws_turn(ws, ALLOWED) for _ in range(3)]
        missing = ws_turn(ws, FREE_ONLY)

    assert [frames[-1]["type"] for frames in served] == ["response.completed"] * 3
    assert_ws_refused(missing, 404, "model_not_found")
    assert sent.secrets_seen() == [SECRETS["pro"]] * 3


def test_a_group_namespace_on_the_websocket_is_confined_to_the_group_like_http(
    gateway: Gateway, ws_gateway: str, alice: Persona, world: World, sent: Upstream
) -> None:
    _confine_to_pro(alice, world)

    with ws_socket(ws_gateway, alice.raw_key, "/pro/v1/responses") as ws:
        served = ws_turn(ws, ALLOWED)
    with ws_socket(ws_gateway, alice.raw_key, "/free/v1/responses") as ws:
        forbidden = ws_turn(ws, ALLOWED)

    assert served[-1]["type"] == "response.completed"
    assert_ws_refused(forbidden, 403, "channel_group_forbidden")
    assert sent.secrets_seen() == [SECRETS["pro"]]


@every_endpoint
def test_charlie_cannot_reach_alices_groups_or_models(
    gateway: Gateway, http: httpx.Client, charlie: Persona, world: World, sent: Upstream, endpoint: Endpoint
) -> None:
    alices_group = endpoint.call(http, charlie.raw_key, ALLOWED, "/pro")
    own_look_alike_group = endpoint.call(http, charlie.raw_key, ALLOWED, "/free")
    alices_path_route = endpoint.call(http, charlie.raw_key, ALLOWED, "/team/pro")
    alices_model = endpoint.call(http, charlie.raw_key, ALLOWED)

    assert_refused(alices_group, endpoint.dialect, 404, "route_group_unavailable")
    assert_refused(alices_path_route, endpoint.dialect, 404, "route_group_unavailable")
    assert_refused(own_look_alike_group, endpoint.dialect, 404, "model_not_found")
    assert_refused(alices_model, endpoint.dialect, 404, "model_not_found")
    assert sent.requests == []


def test_charlie_cannot_reach_alices_models_over_the_websocket(
    gateway: Gateway, ws_gateway: str, charlie: Persona, world: World, sent: Upstream
) -> None:
    with ws_socket(ws_gateway, charlie.raw_key) as ws:
        frames = ws_turn(ws, ALLOWED)

    assert_ws_refused(frames, 404, "model_not_found")
    assert sent.requests == []


# ================================================================================================
# (5) model lists and token counts
# ================================================================================================


def _listed(http: httpx.Client, key: str, path: str, **headers: str) -> list[str]:
    answer = http.get(path, headers={"Authorization": f"Bearer {key}", **headers})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    if "models" in body:
        return sorted(m["name"].removeprefix("models/") for m in body["models"])
    return sorted(m["id"] for m in body["data"])


@pytest.mark.parametrize("namespace", ["", "/pro", "/team/pro"])
@pytest.mark.parametrize(
    ("path", "headers"),
    [("/v1/models", {}), ("/v1/models", {"anthropic-version": "2023-06-01"}), ("/v1beta/models", {})],
    ids=["openai", "anthropic", "gemini"],
)
def test_model_lists_show_only_what_the_key_may_call(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    world: World,
    path: str,
    headers: dict[str, str],
    namespace: str,
) -> None:
    _set(alice, allowed_models=PATTERNS)
    _confine_to_pro(alice, world)

    assert _listed(http, alice.raw_key, namespace + path, **headers) == [ALLOWED]


def test_model_lists_of_an_unrestricted_key_show_its_teams_models_and_a_group_only_the_groups(
    gateway: Gateway, http: httpx.Client, alice: Persona, world: World
) -> None:
    everything = sorted([ALLOWED, DENIED, FREE_ONLY, f"loose/{ALLOWED}", f"loose/{DENIED}"])

    assert _listed(http, alice.raw_key, "/v1/models") == everything
    assert _listed(http, alice.raw_key, "/v1beta/models") == everything
    assert _listed(http, alice.raw_key, "/pro/v1/models") == [ALLOWED, DENIED]
    assert _listed(http, alice.raw_key, "/free/v1beta/models") == sorted([ALLOWED, DENIED, FREE_ONLY])


def test_a_model_the_key_may_not_call_cannot_be_looked_up(
    gateway: Gateway, http: httpx.Client, alice: Persona, world: World
) -> None:
    _set(alice, allowed_models=PATTERNS)
    _confine_to_pro(alice, world)
    auth = {"Authorization": f"Bearer {alice.raw_key}"}

    for namespace in ("", "/pro"):
        assert http.get(f"{namespace}/v1/models/{ALLOWED}", headers=auth).status_code == 200
        assert http.get(f"{namespace}/v1beta/models/{ALLOWED}", headers=auth).status_code == 200
        for model in (DENIED, FREE_ONLY):
            assert_refused(http.get(f"{namespace}/v1/models/{model}", headers=auth), "openai", 404, "model_not_found")
            assert_refused(
                http.get(f"{namespace}/v1beta/models/{model}", headers=auth), "gemini", 404, "model_not_found"
            )


def test_model_lists_refuse_a_namespace_the_key_may_not_use_and_show_charlie_nothing_of_alices(
    gateway: Gateway, http: httpx.Client, alice: Persona, charlie: Persona, world: World
) -> None:
    _confine_to_pro(alice, world)

    forbidden = http.get("/free/v1/models", headers={"Authorization": f"Bearer {alice.raw_key}"})
    charlies_missing = http.get("/pro/v1beta/models", headers={"x-goog-api-key": charlie.raw_key})

    assert_refused(forbidden, "openai", 403, "channel_group_forbidden")
    assert_refused(charlies_missing, "gemini", 404, "route_group_unavailable")
    assert _listed(http, charlie.raw_key, "/v1/models") == []
    assert _listed(http, charlie.raw_key, "/v1beta/models") == []
    assert _listed(http, charlie.raw_key, "/free/v1/models") == []


COUNTS = [
    ("anthropic", "/v1/messages/count_tokens"),
    ("gemini", "/v1beta/models/{model}:countTokens"),
    ("gemini", "/v1/models/{model}:countTokens"),
]


def _count(http: httpx.Client, key: str, dialect: str, path: str, model: str, namespace: str = "") -> httpx.Response:
    if dialect == "anthropic":
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        return http.post(namespace + path, json={"model": model, "messages": MESSAGES}, headers=headers)
    body = {"model": ALLOWED, "contents": GEMINI_CONTENTS}  # the URL's model must win
    return http.post(namespace + path.format(model=model), json=body, headers={"x-goog-api-key": key})


@pytest.mark.parametrize(("dialect", "path"), COUNTS, ids=[p for _, p in COUNTS])
@plain_and_grouped
def test_token_counts_respect_allowed_models_and_groups(
    gateway: Gateway,
    http: httpx.Client,
    alice: Persona,
    world: World,
    sent: Upstream,
    dialect: str,
    path: str,
    namespace: str,
) -> None:
    _set(alice, allowed_models=PATTERNS)
    _confine_to_pro(alice, world)

    allowed = _count(http, alice.raw_key, dialect, path, ALLOWED, namespace)
    denied = _count(http, alice.raw_key, dialect, path, DENIED, namespace)
    outside = _count(http, alice.raw_key, dialect, path, FREE_ONLY, namespace)
    other_group = _count(http, alice.raw_key, dialect, path, ALLOWED, "/free")

    assert allowed.status_code == 200, allowed.text
    assert_refused(denied, dialect, 403, "model_not_allowed")
    assert_refused(outside, dialect, 404, "model_not_found")
    assert_refused(other_group, dialect, 403, "channel_group_forbidden")
    assert sent.requests == []  # an OpenAI-compatible channel cannot count: the estimate is local


@pytest.mark.parametrize(("dialect", "path"), COUNTS, ids=[p for _, p in COUNTS])
def test_charlie_cannot_count_tokens_on_alices_models_or_groups(
    gateway: Gateway, http: httpx.Client, charlie: Persona, world: World, sent: Upstream, dialect: str, path: str
) -> None:
    assert_refused(_count(http, charlie.raw_key, dialect, path, ALLOWED), dialect, 404, "model_not_found")
    assert_refused(
        _count(http, charlie.raw_key, dialect, path, ALLOWED, "/pro"), dialect, 404, "route_group_unavailable"
    )


# ================================================================================================
# A socket opened before the key changed
# ================================================================================================


def test_a_key_disabled_while_its_websocket_is_open_gets_no_more_turns(
    gateway: Gateway, ws_gateway: str, alice: Persona, world: World, sent: Upstream
) -> None:
    with ws_socket(ws_gateway, alice.raw_key) as ws:
        first = ws_turn(ws, ALLOWED)
        _set(alice, enabled=False)
        second = ws_turn(ws, ALLOWED)

    assert first[-1]["type"] == "response.completed"
    assert_ws_refused(second, 401, "invalid_api_key")
    assert len(sent.requests) == 1


def test_a_key_that_expires_while_its_websocket_is_open_gets_no_more_turns(
    gateway: Gateway, ws_gateway: str, alice: Persona, world: World, sent: Upstream
) -> None:
    _set(alice, expires_at=timezone.now() + dt.timedelta(seconds=1))
    with ws_socket(ws_gateway, alice.raw_key) as ws:
        first = ws_turn(ws, ALLOWED)
        time.sleep(max(0.0, (alice.key.expires_at - timezone.now()).total_seconds()) + 0.1)
        second = ws_turn(ws, ALLOWED)

    assert first[-1]["type"] == "response.completed"
    assert_ws_refused(second, 401, "api_key_expired")
    assert len(sent.requests) == 1


def test_a_quota_set_while_a_websocket_is_open_applies_to_its_next_turn(
    gateway: Gateway, ws_gateway: str, alice: Persona, world: World, sent: Upstream
) -> None:
    with ws_socket(ws_gateway, alice.raw_key) as ws:
        first = ws_turn(ws, ALLOWED)
        # The recorder may add the first turn to the counter before or after this: at least 5 either way.
        ApiKeyUsageCounter.objects.update_or_create(api_key=alice.key, defaults={"total_requests": 5})
        _set(alice, total_request_limit=5)
        second = ws_turn(ws, ALLOWED)

    assert first[-1]["type"] == "response.completed"
    assert_ws_refused(second, 429, "total_quota_exceeded")
    assert len(sent.requests) == 1


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize(("dialect", "path"), COUNTS, ids=[p for _, p in COUNTS])
def test_an_exhausted_key_cannot_count_tokens_either(
    gateway: Gateway, http: httpx.Client, alice: Persona, world: World, dialect: str, path: str, limit: str
) -> None:
    """A count is a request of the key (management spec D7): a used-up key gets the 429 there too."""
    _exhaust(http, alice, limit)

    assert_refused(_count(http, alice.raw_key, dialect, path, ALLOWED), dialect, 429, LIMITS[limit][3])
