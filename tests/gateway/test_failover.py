"""Failover, cool-downs and load balancing, end to end: official SDKs → gateway → fake upstreams.

A 429 channel hands the request to the next candidate in every client dialect, stream or not; a
cooling channel gets no request until its cool-down ends; round-robin spreads requests evenly,
fill-first sticks to one channel until it fails; a group namespace fails over only inside the group.
Every attempt is a usage row with its number; the client request counts once against the key.
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from accounts.models import ApiKeyUsageCounter, ChannelGroup
from channels_app.models import Channel, ChannelKey, ProviderKind, RuntimeSettings
from tests.conftest import Persona
from tests.fakes.claude_upstream import FakeClaudeUpstream
from tests.fakes.fixtures import CLAUDE_API_KEY, claude_upstream, claude_upstream_server  # noqa: F401
from tests.fakes.openai_upstream import FakeOpenAIUpstream, error_object
from tests.gateway.conftest import Gateway
from tests.gateway.openai_clients_support import usage_rows

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "relay-model"
SECRET = "sk-upstream-secret-123456"
HEALTHY = "Served by the healthy channel."


def _chat(gateway: Gateway, key: str, stream: bool, base: str = "") -> str:
    client = openai.OpenAI(base_url=(base or gateway.url) + "/v1", api_key=key, max_retries=0)
    messages: Any = [{"role": "user", "content": "Hi"}]
    if stream:
        chunks = client.chat.completions.create(model=MODEL, messages=messages, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content or ""


def _responses(gateway: Gateway, key: str, stream: bool) -> str:
    client = openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)
    if stream:
        events = client.responses.create(model=MODEL, input="Hi", stream=True)
        return "".join(e.delta for e in events if e.type == "response.output_text.delta")
    return client.responses.create(model=MODEL, input="Hi").output_text


def _anthropic(gateway: Gateway, key: str, stream: bool) -> str:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    kwargs: Any = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    if stream:
        with client.messages.stream(**kwargs) as s:
            return "".join(s.text_stream)
    return "".join(b.text for b in client.messages.create(**kwargs).content if b.type == "text")


def _gemini(gateway: Gateway, key: str, stream: bool) -> str:
    options = gtypes.HttpOptions(base_url=gateway.url, api_version="v1beta")
    client = genai.Client(api_key=key, http_options=options)
    if stream:
        return "".join(c.text or "" for c in client.models.generate_content_stream(model=MODEL, contents="Hi"))
    return client.models.generate_content(model=MODEL, contents="Hi").text or ""


CLIENTS = {"chat": _chat, "responses": _responses, "anthropic": _anthropic, "gemini": _gemini}


def _openai_channel(
    persona: Persona, fake: FakeOpenAIUpstream, name: str, upstream_model: str, **fields: Any
) -> Channel:
    fake.script.api_key = SECRET
    return Channel.objects.create(
        team=persona.team,
        kind=ProviderKind.OPENAI_COMPATIBILITY,
        name=name,
        base_url=fake.base_url,
        secret=SECRET,
        served_models=[{"name": upstream_model, "alias": MODEL}],
        **fields,
    )


def _claude_channel(persona: Persona, fake: FakeClaudeUpstream, **fields: Any) -> Channel:
    return Channel.objects.create(
        team=persona.team,
        kind=ProviderKind.CLAUDE_API_KEY,
        name="healthy-claude",
        base_url=fake.base_url,
        secret=CLAUDE_API_KEY,
        served_models=[{"name": "claude-upstream", "alias": MODEL}],
        **fields,
    )


def _fail_model(fake: FakeOpenAIUpstream, failing: dict[str, tuple[int, dict[str, str]]]) -> None:
    """Answer requests for the upstream models in ``failing`` with (status, headers); others normally."""

    def respond(body: Any) -> dict[str, Any] | None:
        model = body.get("model") if isinstance(body, dict) else None
        if model not in failing:
            return None
        status, headers = failing[model]
        error = error_object("Rate limit reached" if status == 429 else "upstream trouble", "rate_limit_error")
        return {"status": status, "error": error, "headers": headers}

    fake.script.responder = respond


def _retry_settings(**fields: Any) -> None:
    RuntimeSettings.objects.update_or_create(pk=1, defaults=fields)


def _models_seen(fake: FakeOpenAIUpstream) -> list[str]:
    return [r.json["model"] for r in fake.requests if isinstance(r.json, dict)]


# --- a 429 channel fails over, in every client dialect ------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_a_429_channel_fails_over_to_a_healthy_one_in_every_dialect(
    gateway: Gateway,
    alice: Persona,
    upstream: FakeOpenAIUpstream,
    claude_upstream: FakeClaudeUpstream,  # noqa: F811
    client: str,
    stream: bool,
) -> None:
    flaky = _openai_channel(alice, upstream, "flaky-openai", "gpt-up", priority=10)
    healthy = _claude_channel(alice, claude_upstream)
    upstream.fail(429, "Rate limit reached", type_="rate_limit_error", headers={"retry-after": "30"})
    claude_upstream.reply(HEALTHY)

    assert CLIENTS[client](gateway, alice.raw_key, stream).strip() == HEALTHY

    assert (len(upstream.requests), len(claude_upstream.requests)) == (1, 1)
    first, second = usage_rows(gateway, 2)
    assert (first.attempt, first.status_code, first.channel_id) == (1, 429, flaky.pk)
    assert (second.attempt, second.status_code, second.channel_id) == (2, 200, healthy.pk)
    assert first.request_id == second.request_id
    assert ApiKeyUsageCounter.objects.get(api_key=alice.key).total_requests == 1


# --- cool-downs --------------------------------------------------------------------------------


def test_a_cooling_channel_gets_no_request_until_its_cool_down_ends(
    gateway: Gateway,
    alice: Persona,
    upstream: FakeOpenAIUpstream,
    claude_upstream: FakeClaudeUpstream,  # noqa: F811
) -> None:
    _openai_channel(alice, upstream, "flaky-openai", "gpt-up", priority=10)
    _claude_channel(alice, claude_upstream)
    claude_upstream.reply(HEALTHY)
    upstream.fail(429, "Rate limit reached", type_="rate_limit_error", headers={"retry-after": "4"})

    cooled_at = time.monotonic()
    answers = [_chat(gateway, alice.raw_key, stream=False) for _ in range(4)]
    assert answers == [HEALTHY] * 4
    assert len(upstream.requests) == 1  # only the request that earned the cool-down
    assert len(claude_upstream.requests) == 4

    upstream.reset()
    upstream.script.api_key = SECRET
    upstream.reply("The first channel is back.")
    time.sleep(max(0.0, 4.1 - (time.monotonic() - cooled_at)))
    assert _chat(gateway, alice.raw_key, stream=False) == "The first channel is back."
    assert len(upstream.requests) == 1


def test_when_every_channel_cools_the_client_gets_429_model_cooldown_with_retry_after(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream, http: httpx.Client
) -> None:
    _openai_channel(alice, upstream, "only-openai", "gpt-up")
    upstream.fail(429, "Rate limit reached", type_="rate_limit_error", headers={"retry-after": "40"})
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    headers = {"Authorization": f"Bearer {alice.raw_key}"}
    assert http.post("/v1/chat/completions", json=body, headers=headers).status_code == 429

    again = http.post("/v1/chat/completions", json=body, headers=headers)

    assert again.status_code == 429
    assert 35 <= int(again.headers["retry-after"]) <= 40
    error = again.json()["error"]
    assert (error["code"], error["model"]) == ("model_cooldown", MODEL)
    assert 35 <= error["reset_seconds"] <= 40 and error["reset_time"]
    assert len(upstream.requests) == 1


def test_a_key_the_upstream_refuses_is_cooled_alone_and_the_channels_other_key_serves(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream
) -> None:
    channel = _openai_channel(alice, upstream, "two-keys", "gpt-up")
    Channel.objects.filter(pk=channel.pk).update(secret="sk-revoked-key-000000")  # the upstream answers 401
    ChannelKey.objects.create(channel=channel, secret=SECRET)
    upstream.reply(HEALTHY)

    answers = [_chat(gateway, alice.raw_key, stream=False) for _ in range(4)]

    assert answers == [HEALTHY] * 4
    used = [r.authorization for r in upstream.requests]
    assert used.count("Bearer sk-revoked-key-000000") == 1  # suspended after its 401, alone
    assert used.count(f"Bearer {SECRET}") == 4
    rows = usage_rows(gateway, 5)
    assert [(r.attempt, r.status_code) for r in rows] == [(1, 502), (2, 200), (1, 200), (1, 200), (1, 200)]


@pytest.mark.parametrize("unified", [True, False], ids=["unified-window", "model-limit"])
def test_a_claude_unified_window_429_cools_every_model_of_the_credential(
    gateway: Gateway,
    alice: Persona,
    upstream: FakeOpenAIUpstream,
    claude_upstream: FakeClaudeUpstream,  # noqa: F811
    unified: bool,
) -> None:
    models = [{"name": "claude-upstream", "alias": MODEL}, {"name": "claude-other", "alias": "relay-other"}]
    claude = _claude_channel(alice, claude_upstream, priority=10)
    claude.served_models = models
    claude.save()
    fallback = _openai_channel(alice, upstream, "fallback-openai", "gpt-up")
    fallback.served_models = [{"name": "gpt-up", "alias": MODEL}, {"name": "gpt-other", "alias": "relay-other"}]
    fallback.save()
    claude_upstream.rate_limit(retry_after=600, unified=unified)
    upstream.reply(HEALTHY)
    client = openai.OpenAI(base_url=gateway.v1, api_key=alice.raw_key, max_retries=0)
    messages: Any = [{"role": "user", "content": "Hi"}]

    for model in (MODEL, "relay-other"):
        assert client.chat.completions.create(model=model, messages=messages).choices[0].message.content == HEALTHY

    # A rejected 5-hour window is the whole subscription's: the other model is not even tried.
    tried = [r.json["model"] for r in claude_upstream.requests]
    assert tried == (["claude-upstream"] if unified else ["claude-upstream", "claude-other"])
    assert _models_seen(upstream) == ["gpt-up", "gpt-other"]


def test_a_retry_round_waits_for_the_only_channel_and_then_succeeds(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream
) -> None:
    _retry_settings(max_retry_interval=5, request_retry=2)
    _openai_channel(alice, upstream, "only-openai", "gpt-up")
    calls = {"n": 0}

    def first_one_fails(body: Any) -> dict[str, Any] | None:
        calls["n"] += 1
        if calls["n"] > 1:
            return {"text": "Answered after the wait."}
        error = error_object("Rate limit reached", "rate_limit_error")
        return {"status": 429, "error": error, "headers": {"retry-after": "1"}}

    upstream.script.responder = first_one_fails
    started = time.monotonic()

    assert _chat(gateway, alice.raw_key, stream=True) == "Answered after the wait."

    assert time.monotonic() - started >= 0.9
    assert [(r.attempt, r.status_code) for r in usage_rows(gateway, 2)] == [(1, 429), (2, 200)]


def test_a_wait_longer_than_max_retry_interval_is_not_taken(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream, http: httpx.Client
) -> None:
    _retry_settings(max_retry_interval=5, request_retry=3)
    _openai_channel(alice, upstream, "only-openai", "gpt-up")
    upstream.fail(429, "Rate limit reached", type_="rate_limit_error", headers={"retry-after": "20"})
    started = time.monotonic()

    answer = http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {alice.raw_key}"},
    )

    assert answer.status_code == 429 and answer.headers["retry-after"] == "20"
    assert time.monotonic() - started < 3
    assert len(upstream.requests) == 1


def test_the_requests_own_fault_is_not_failed_over(
    gateway: Gateway,
    alice: Persona,
    upstream: FakeOpenAIUpstream,
    claude_upstream: FakeClaudeUpstream,  # noqa: F811
    http: httpx.Client,
) -> None:
    _openai_channel(alice, upstream, "first-openai", "gpt-up", priority=10)
    _claude_channel(alice, claude_upstream)
    upstream.fail(400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded")

    answer = http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {alice.raw_key}"},
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "context_length_exceeded"
    assert (len(upstream.requests), len(claude_upstream.requests)) == (1, 0)


def test_a_stream_that_already_reached_the_client_is_not_failed_over(
    gateway: Gateway,
    alice: Persona,
    upstream: FakeOpenAIUpstream,
    claude_upstream: FakeClaudeUpstream,  # noqa: F811
) -> None:
    _openai_channel(alice, upstream, "first-openai", "gpt-up", priority=10)
    _claude_channel(alice, claude_upstream)
    upstream.reply("Half of an answer that never ends")
    upstream.cut_off(after_events=3)

    with pytest.raises(openai.APIError):
        _chat(gateway, alice.raw_key, stream=True)

    assert (len(upstream.requests), len(claude_upstream.requests)) == (1, 0)
    (row,) = usage_rows(gateway, 1)
    assert (row.attempt, row.status_code) == (1, 502)


def test_transport_failures_fail_over_too(
    gateway: Gateway,
    alice: Persona,
    claude_upstream: FakeClaudeUpstream,  # noqa: F811
) -> None:
    dead = Channel.objects.create(
        team=alice.team,
        kind=ProviderKind.OPENAI_COMPATIBILITY,
        name="dead-openai",
        base_url="http://127.0.0.1:9/v1",  # the discard port: connection refused
        secret=SECRET,
        served_models=[{"name": "gpt-up", "alias": MODEL}],
        priority=10,
    )
    _claude_channel(alice, claude_upstream)
    claude_upstream.reply(HEALTHY)

    assert _chat(gateway, alice.raw_key, stream=False) == HEALTHY

    first, second = usage_rows(gateway, 2)
    assert (first.channel_id, first.status_code, first.error_type) == (dead.pk, 502, "upstream_unreachable")
    assert (second.attempt, second.status_code) == (2, 200)


# --- load balancing ----------------------------------------------------------------------------


def _three_channels(alice: Persona, upstream: FakeOpenAIUpstream) -> list[Channel]:
    return [_openai_channel(alice, upstream, f"rr-{n}", f"up-{n}") for n in (1, 2, 3)]


@pytest.mark.parametrize("requests", [30, 31])
def test_round_robin_spreads_requests_evenly(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream, requests: int
) -> None:
    _three_channels(alice, upstream)

    for _ in range(requests):
        _chat(gateway, alice.raw_key, stream=False)

    seen = _models_seen(upstream)
    counts = [seen.count(f"up-{n}") for n in (1, 2, 3)]
    assert sum(counts) == requests
    assert max(counts) - min(counts) <= 1, counts


def test_fill_first_sticks_to_one_channel_until_it_fails(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream
) -> None:
    _retry_settings(routing_strategy=RuntimeSettings.Strategy.FILL_FIRST, max_retry_interval=0)
    _three_channels(alice, upstream)

    for _ in range(5):
        _chat(gateway, alice.raw_key, stream=False)
    assert _models_seen(upstream) == ["up-1"] * 5

    _fail_model(upstream, {"up-1": (503, {})})
    for _ in range(5):
        _chat(gateway, alice.raw_key, stream=False)

    assert _models_seen(upstream)[5:] == ["up-1"] + ["up-2"] * 5  # one failure, then up-2 while up-1 cools


# --- groups ------------------------------------------------------------------------------------


def _grouped(alice: Persona, upstream: FakeOpenAIUpstream) -> tuple[Channel, Channel, Channel]:
    pro = ChannelGroup.objects.create(team=alice.team, name="pro", slug="pro")
    inside_a = _openai_channel(alice, upstream, "pro-a", "up-a", priority=10)
    inside_b = _openai_channel(alice, upstream, "pro-b", "up-b", priority=5)
    outside = _openai_channel(alice, upstream, "plain-c", "up-c", priority=20)
    pro.channels.add(inside_a, inside_b)
    return inside_a, inside_b, outside


@pytest.mark.parametrize(
    ("strategy", "first_five"),
    [
        (ChannelGroup.Strategy.FILL_FIRST, ["up-a"] * 5),  # the top tier's first channel until it fails
        (ChannelGroup.Strategy.WEIGHTED, ["up-a", "up-b", "up-a", "up-a", "up-b"]),  # weights 10 : 5, interleaved
    ],
)
def test_a_groups_own_strategy_decides_requests_to_its_url(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream, strategy: str, first_five: list[str]
) -> None:
    _grouped(alice, upstream)
    ChannelGroup.objects.filter(name="pro").update(strategy=strategy)

    for _ in range(5):
        _chat(gateway, alice.raw_key, stream=False, base=f"{gateway.url}/pro")
    _chat(gateway, alice.raw_key, stream=False)  # plain /v1: the global round-robin, highest tier first

    assert _models_seen(upstream) == [*first_five, "up-c"]


def test_a_group_namespace_fails_over_inside_the_group_only(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream
) -> None:
    inside_a, inside_b, _ = _grouped(alice, upstream)
    _fail_model(upstream, {"up-a": (503, {})})

    for stream in (False, True):
        assert _chat(gateway, alice.raw_key, stream, base=f"{gateway.url}/pro") == "Hello from the fake upstream."

    assert _models_seen(upstream) == ["up-a", "up-b", "up-b"]  # up-a cools after its 503; up-c is outside
    rows = usage_rows(gateway, 3)
    assert [(r.attempt, r.channel_id, r.status_code) for r in rows] == [
        (1, inside_a.pk, 503),
        (2, inside_b.pk, 200),
        (1, inside_b.pk, 200),
    ]
    assert {r.group_id for r in rows} == {ChannelGroup.objects.get(name="pro").pk}


def test_a_group_whose_channels_all_fail_never_leaves_the_group(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream, http: httpx.Client
) -> None:
    _grouped(alice, upstream)
    _fail_model(upstream, {"up-a": (503, {}), "up-b": (502, {})})

    answer = http.post(
        "/pro/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {alice.raw_key}"},
    )

    assert answer.status_code == 502
    assert sorted(_models_seen(upstream)) == ["up-a", "up-b"]


def test_plain_v1_uses_every_channel_and_the_highest_priority_first(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream
) -> None:
    _grouped(alice, upstream)

    _chat(gateway, alice.raw_key, stream=False)

    assert _models_seen(upstream) == ["up-c"]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/nowhere/v1/chat/completions", 404, "route_group_unavailable"),
        ("/pro/v1/chat/completions", 403, "channel_group_forbidden"),
    ],
)
def test_a_namespace_the_key_may_not_use_is_refused_before_any_upstream(
    gateway: Gateway,
    alice: Persona,
    upstream: FakeOpenAIUpstream,
    http: httpx.Client,
    path: str,
    status: int,
    code: str,
) -> None:
    _grouped(alice, upstream)
    other = ChannelGroup.objects.create(team=alice.team, name="cheap", slug="cheap")
    alice.key.allowed_channel_groups.add(other)

    answer = http.post(
        path,
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {alice.raw_key}"},
    )

    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert upstream.requests == []
