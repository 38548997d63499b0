"""``streaming.bootstrap-retries``: a 2xx stream that opens with an error fails over before the client sees a byte.

An upstream that has already answered 200 reports trouble as an event (Anthropic ``event: error``
``overloaded_error``, a Codex ``error`` event ``server_is_overloaded``). With bootstrap retries on, the
gateway reads the stream's first event before answering the client, so such a stream is one more failed
attempt: its channel cools down and the next candidate answers. With them off (the default) the stream is
the client's at once and the error reaches it in the stream, in its own dialect.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from channels_app.models import Channel, ProviderKind, RuntimeSettings
from tests.conftest import Persona
from tests.fakes.claude_upstream import FakeClaudeUpstream
from tests.fakes.fixtures import (  # noqa: F401
    CLAUDE_API_KEY,
    CODEX_TOKEN,
    claude_upstream,
    claude_upstream_server,
    responses_upstream,
    responses_upstream_server,
)
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.gateway.conftest import Gateway
from tests.gateway.openai_clients_support import usage_rows

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "relay-model"
SECRET = "sk-upstream-secret-123456"
HEALTHY = "Hello from the fake upstream."
MESSAGES: Any = [{"role": "user", "content": "Hi"}]


def _channels(alice: Persona, flaky_kind: str, flaky_url: str, flaky_secret: str, upstream: FakeOpenAIUpstream) -> None:
    Channel.objects.create(
        team=alice.team,
        kind=flaky_kind,
        name="flaky",
        base_url=flaky_url,
        secret=flaky_secret,
        priority=10,
        served_models=[{"name": "flaky-up", "alias": MODEL}],
    )
    _healthy(alice, upstream)


def _healthy(alice: Persona, upstream: FakeOpenAIUpstream, name: str = "healthy") -> None:
    """An OpenAI-compatible channel on the fake upstream, serving MODEL as gpt-up."""
    upstream.script.api_key = SECRET
    Channel.objects.create(
        team=alice.team,
        kind=ProviderKind.OPENAI_COMPATIBILITY,
        name=name,
        base_url=upstream.base_url,
        secret=SECRET,
        served_models=[{"name": "gpt-up", "alias": MODEL}],
    )


def _bootstrap(retries: int) -> None:
    RuntimeSettings.objects.update_or_create(pk=1, defaults={"streaming_bootstrap_retries": retries})


def _chat_stream(gateway: Gateway, key: str) -> str:
    client = openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)
    chunks = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _anthropic_stream(gateway: Gateway, key: str) -> str:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    with client.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as stream:
        return "".join(stream.text_stream)


CLIENTS = {"chat": _chat_stream, "anthropic": _anthropic_stream}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_a_claude_stream_that_opens_with_overloaded_fails_over(
    gateway: Gateway,
    alice: Persona,
    upstream: FakeOpenAIUpstream,
    claude_upstream: FakeClaudeUpstream,  # noqa: F811
    client: str,
) -> None:
    _bootstrap(1)
    _channels(alice, ProviderKind.CLAUDE_API_KEY, claude_upstream.base_url, CLAUDE_API_KEY, upstream)
    claude_upstream.reply("never seen")
    claude_upstream.fail_midstream(0)  # the very first event is `event: error` (overloaded_error)

    assert CLIENTS[client](gateway, alice.raw_key) == HEALTHY

    assert (len(claude_upstream.requests), len(upstream.requests)) == (1, 1)
    first, second = usage_rows(gateway, 2)
    assert (first.attempt, first.status_code, first.channel_name) == (1, 529, "flaky")
    assert "Overloaded" in first.error_message
    assert (second.attempt, second.status_code, second.channel_name) == (2, 200, "healthy")


def test_a_codex_stream_that_opens_with_server_is_overloaded_fails_over(
    gateway: Gateway,
    alice: Persona,
    upstream: FakeOpenAIUpstream,
    responses_upstream: FakeResponsesUpstream,  # noqa: F811
) -> None:
    _bootstrap(1)
    _channels(alice, ProviderKind.CODEX_API_KEY, responses_upstream.base_url, CODEX_TOKEN, upstream)
    responses_upstream.fail_midstream(0, code="server_is_overloaded")

    assert _chat_stream(gateway, alice.raw_key) == HEALTHY

    first, second = usage_rows(gateway, 2)
    assert (first.status_code, second.status_code) == (529, 200)


def test_without_bootstrap_retries_the_error_reaches_the_client_in_its_stream(
    gateway: Gateway,
    alice: Persona,
    upstream: FakeOpenAIUpstream,
    claude_upstream: FakeClaudeUpstream,  # noqa: F811
) -> None:
    _channels(alice, ProviderKind.CLAUDE_API_KEY, claude_upstream.base_url, CLAUDE_API_KEY, upstream)
    claude_upstream.reply("never seen")
    claude_upstream.fail_midstream(0)

    with pytest.raises(anthropic.APIStatusError) as failed:
        _anthropic_stream(gateway, alice.raw_key)

    assert "Overloaded" in str(failed.value)
    assert (len(claude_upstream.requests), len(upstream.requests)) == (1, 0)


def test_the_retries_are_counted_and_the_last_failure_is_answered_before_any_byte(
    gateway: Gateway,
    alice: Persona,
    upstream: FakeOpenAIUpstream,
    claude_upstream: FakeClaudeUpstream,  # noqa: F811
) -> None:
    _bootstrap(1)
    _channels(alice, ProviderKind.CLAUDE_API_KEY, claude_upstream.base_url, CLAUDE_API_KEY, upstream)
    claude_upstream.fail_midstream(0)
    upstream.fail(503, "upstream trouble", type_="server_error")  # the other channel is down too
    client = anthropic.Anthropic(base_url=gateway.url, api_key=alice.raw_key, max_retries=0)

    with pytest.raises(anthropic.APIStatusError) as failed:
        client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True)

    assert failed.value.status_code in (503, 529)  # a real HTTP error: the stream never started
    assert failed.value.body["type"] == "error"


def test_a_healthy_stream_is_relayed_unchanged_with_bootstrap_on(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream
) -> None:
    _bootstrap(3)
    _healthy(alice, upstream, name="only")

    assert _chat_stream(gateway, alice.raw_key) == HEALTHY
    (row,) = usage_rows(gateway, 1)
    assert (row.status_code, row.stream) == (200, True)
