"""A channel shared with every team serves other teams' keys, and their usage stays theirs.

alice's team owns the channel and marks it shared (a superuser decision); charlie, in another team,
calls the gateway with his own key through the official SDK and is served by it. His request is
logged under his team, alice's team sees none of it, and a key of charlie's limited to his own
channels never reaches the shared one.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from channels_app.models import Channel, ProviderKind
from tests.conftest import Persona
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.gateway.conftest import Gateway
from tests.gateway.openai_clients_support import usage_rows

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-shared-upstream-0000000000"
MESSAGES: Any = [{"role": "user", "content": "Hi"}]


def _shared(alice: Persona, upstream: FakeOpenAIUpstream, **fields: Any) -> Channel:
    upstream.script.api_key = SECRET
    return Channel.objects.create(
        team=alice.team,
        kind=ProviderKind.OPENAI_COMPATIBILITY,
        name="company-pool",
        base_url=upstream.base_url,
        secret=SECRET,
        served_models=[{"name": "gpt-up", "alias": "pool-model"}],
        **fields,
    )


def test_another_teams_key_is_served_by_a_shared_channel_and_logged_under_its_own_team(
    gateway: Gateway, alice: Persona, charlie: Persona, upstream: FakeOpenAIUpstream
) -> None:
    shared = _shared(alice, upstream, shared=True)
    client = openai.OpenAI(base_url=gateway.v1, api_key=charlie.raw_key, max_retries=0)

    answer = client.chat.completions.create(model="pool-model", messages=MESSAGES)

    assert answer.choices[0].message.content == "Hello from the fake upstream."
    assert [m.id for m in client.models.list()] == ["pool-model"]
    (row,) = usage_rows(gateway, 1)
    assert (row.team_id, row.api_key_id, row.channel_id) == (charlie.team.pk, charlie.key.pk, shared.pk)


def test_an_unshared_channel_is_another_teams_404(
    gateway: Gateway, alice: Persona, charlie: Persona, upstream: FakeOpenAIUpstream
) -> None:
    _shared(alice, upstream)
    client = openai.OpenAI(base_url=gateway.v1, api_key=charlie.raw_key, max_retries=0)

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="pool-model", messages=MESSAGES)

    assert missing.value.code == "model_not_found"
    assert upstream.requests == []


def test_a_key_limited_to_its_teams_channels_does_not_reach_a_shared_one(
    gateway: Gateway, alice: Persona, charlie: Persona, upstream: FakeOpenAIUpstream
) -> None:
    _shared(alice, upstream, shared=True)
    own = Channel.objects.create(
        team=charlie.team, kind=ProviderKind.OPENAI_COMPATIBILITY, name="own", base_url=upstream.base_url
    )
    charlie.key.allowed_channels.add(own)
    client = openai.OpenAI(base_url=gateway.v1, api_key=charlie.raw_key, max_retries=0)

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="pool-model", messages=MESSAGES)
    assert upstream.requests == []
