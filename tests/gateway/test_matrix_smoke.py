"""Every client dialect against every upstream family, plain text, stream and not (official SDKs)."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from channels_app.models import Channel, ProviderKind
from tests.fakes.fixtures import (  # noqa: F401
    CLAUDE_API_KEY,
    CODEX_TOKEN,
    GEMINI_API_KEY,
    claude_upstream,
    claude_upstream_server,
    gemini_upstream,
    gemini_upstream_server,
    responses_upstream,
    responses_upstream_server,
)

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "matrix-model"
TEXT = "Hello from the upstream family."


@pytest.fixture
def family_channel(request, alice, upstream, claude_upstream, gemini_upstream, responses_upstream):  # noqa: F811
    family = request.param
    fakes: dict[str, tuple[Any, str, str]] = {
        "openai": (upstream, ProviderKind.OPENAI_COMPATIBILITY, "sk-upstream-secret-123456"),
        "claude": (claude_upstream, ProviderKind.CLAUDE_API_KEY, CLAUDE_API_KEY),
        "gemini": (gemini_upstream, ProviderKind.GEMINI_API_KEY, GEMINI_API_KEY),
        "codex": (responses_upstream, ProviderKind.CODEX_API_KEY, CODEX_TOKEN),
    }
    fake, kind, secret = fakes[family]
    fake.reply(TEXT)
    if family == "openai":
        fake.script.api_key = secret
    Channel.objects.create(
        team=alice.team,
        kind=kind,
        name=f"fake-{family}",
        base_url=fake.base_url,
        secret=secret,
        served_models=[{"name": "upstream-model", "alias": MODEL}],
    )
    return fake


def _chat(gateway, key: str, stream: bool) -> str:
    client = openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)
    if stream:
        return "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
            )
            if c.choices
        )
    return (
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
        .choices[0]
        .message.content
    )


def _responses(gateway, key: str, stream: bool) -> str:
    client = openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)
    if stream:
        return "".join(
            e.delta
            for e in client.responses.create(model=MODEL, input="Hi", stream=True)
            if e.type == "response.output_text.delta"
        )
    return client.responses.create(model=MODEL, input="Hi").output_text


def _anthropic(gateway, key: str, stream: bool) -> str:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    kwargs = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    if stream:
        with client.messages.stream(**kwargs) as s:
            return "".join(s.text_stream)
    return "".join(b.text for b in client.messages.create(**kwargs).content if b.type == "text")


def _gemini(gateway, key: str, stream: bool) -> str:
    client = genai.Client(api_key=key, http_options=gtypes.HttpOptions(base_url=gateway.url, api_version="v1beta"))
    if stream:
        return "".join(c.text or "" for c in client.models.generate_content_stream(model=MODEL, contents="Hi"))
    return client.models.generate_content(model=MODEL, contents="Hi").text


CLIENTS = {"chat": _chat, "resp": _responses, "anth": _anthropic, "gem": _gemini}


@pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
@pytest.mark.parametrize("family_channel", ["openai", "claude", "gemini", "codex"], indirect=True)
@pytest.mark.parametrize("client", list(CLIENTS))
def test_plain_text_reaches_every_client_from_every_family(gateway, alice, family_channel, client, stream) -> None:
    assert CLIENTS[client](gateway, alice.raw_key, stream).strip() == TEXT
