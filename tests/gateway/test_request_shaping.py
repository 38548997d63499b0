"""What the gateway adds to a request on its way up: a key's system prompt and the config's payload rules.

The client's own request is untouched in the log; the upstream (a fake OpenAI server) sees the
key's prompt before the client's system text, in every client dialect, and bodies edited by the
``payload`` rules that match the model and protocol.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from channels_app.models import Channel, RuntimeSettings
from gateway import system_prompt
from tests.conftest import Persona
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.gateway.conftest import CLIENT_MODEL, UPSTREAM_MODEL, Gateway
from tests.gateway.openai_clients_support import usage_rows
from usage import bodies

pytestmark = pytest.mark.django_db(transaction=True)
PROMPT = "Answer in French."

# One request per client dialect, each with its own system text "Be brief."
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": (
        "/v1/chat/completions",
        {
            "model": CLIENT_MODEL,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        },
    ),
    "responses": ("/v1/responses", {"model": CLIENT_MODEL, "instructions": "Be brief.", "input": "Hi"}),
    "anthropic": (
        "/v1/messages",
        {
            "model": CLIENT_MODEL,
            "max_tokens": 50,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hi"}],
        },
    ),
    "gemini": (
        f"/v1beta/models/{CLIENT_MODEL}:generateContent",
        {
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        },
    ),
}


def _post(http: httpx.Client, persona: Persona, dialect: str) -> httpx.Response:
    path, body = REQUESTS[dialect]
    return http.post(path, json=body, headers={"Authorization": f"Bearer {persona.raw_key}"})


def _system_texts(sent: dict[str, Any]) -> list[str]:
    texts = []
    for message in sent["messages"]:
        if message["role"] not in ("system", "developer"):
            continue
        content = message["content"]
        texts += [content] if isinstance(content, str) else [part["text"] for part in content]
    return texts


@pytest.mark.parametrize("dialect", list(REQUESTS))
def test_a_keys_system_prompt_comes_before_the_clients_own_in_every_dialect(
    gateway: Gateway, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream, http: httpx.Client, dialect: str
) -> None:
    alice.key.system_prompt = PROMPT
    alice.key.save()

    assert _post(http, alice, dialect).status_code == 200

    joined = "\n\n".join(_system_texts(upstream.last.json))
    assert joined.index(PROMPT) < joined.index("Be brief.")
    (row,) = usage_rows(gateway, 1)
    logged, _ = bodies.decompress(row.body.request)
    assert PROMPT.encode() not in logged  # the log keeps what the client sent


def test_without_a_system_prompt_a_same_dialect_body_goes_up_byte_for_byte(
    gateway: Gateway, alice: Persona, upstream: FakeOpenAIUpstream, http: httpx.Client
) -> None:
    Channel.objects.create(
        team=alice.team,
        kind="openai-compatibility",
        name="same-name",
        base_url=upstream.base_url,
        secret="sk-upstream-secret-123456",
        served_models=[{"name": UPSTREAM_MODEL}],
    )
    raw = b'{"model": "%s",  "messages": [{"role": "user", "content": "Hi"}]}' % UPSTREAM_MODEL.encode()

    http.post("/v1/chat/completions", content=raw, headers={"Authorization": f"Bearer {alice.raw_key}"})

    assert upstream.last.body == raw


def test_payload_rules_default_override_and_filter_reach_the_upstream_body(
    gateway: Gateway, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream, http: httpx.Client
) -> None:
    RuntimeSettings.objects.update_or_create(
        pk=1,
        defaults={
            "payload_rules": {
                "default": [{"models": [{"name": "gpt-*"}], "params": {"temperature": 0.2, "top_p": 0.9}}],
                "override": [{"models": [{"name": UPSTREAM_MODEL, "protocol": "openai"}], "params": {"seed": 7}}],
                "filter": [{"models": [{"name": "*"}], "params": ["user"]}],
            }
        },
    )
    body = {"model": CLIENT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "top_p": 0.5, "user": "u-1"}

    http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {alice.raw_key}"})

    sent = upstream.last.json
    assert (sent["temperature"], sent["top_p"], sent["seed"]) == (0.2, 0.5, 7)
    assert "user" not in sent


def test_a_rule_for_another_protocol_leaves_the_body_alone(
    gateway: Gateway, alice: Persona, channel: Channel, upstream: FakeOpenAIUpstream, http: httpx.Client
) -> None:
    rules = {"override": [{"models": [{"name": "*", "protocol": "gemini"}], "params": {"seed": 7}}]}
    RuntimeSettings.objects.update_or_create(pk=1, defaults={"payload_rules": rules})
    body = {"model": CLIENT_MODEL, "messages": [{"role": "user", "content": "Hi"}]}

    http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {alice.raw_key}"})

    assert "seed" not in upstream.last.json


@pytest.mark.parametrize(
    ("family", "payload", "expected"),
    [
        (
            "openai",
            {"messages": [{"role": "user", "content": "Hi"}]},
            {"messages": [{"role": "system", "content": "P"}, {"role": "user", "content": "Hi"}]},
        ),
        ("responses", {"input": "Hi"}, {"input": "Hi", "instructions": "P"}),
        ("responses", {"input": "Hi", "instructions": "Own"}, {"input": "Hi", "instructions": "P\n\nOwn"}),
        ("claude", {"system": "Own"}, {"system": "P\n\nOwn"}),
        (
            "claude",
            {"system": [{"type": "text", "text": "Own"}]},
            {"system": [{"type": "text", "text": "P"}, {"type": "text", "text": "Own"}]},
        ),
        ("claude", {}, {"system": "P"}),
        (
            "gemini",
            {"system_instruction": {"parts": [{"text": "Own"}]}},
            {"systemInstruction": {"parts": [{"text": "P"}, {"text": "Own"}]}},
        ),
        ("gemini", {}, {"systemInstruction": {"parts": [{"text": "P"}]}}),
    ],
)
def test_inject_puts_the_prompt_first_in_each_familys_place(
    family: str, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    before = repr(payload)
    assert system_prompt.inject(family, payload, "P") == expected
    assert repr(payload) == before
