"""A key's limits are enforced on the relay, in the client's own dialect, and cost nothing when refused."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from accounts.limits import Limiter
from tests.gateway.isolated_limits import isolated_limiter
from usage.models import RequestLog

pytestmark = pytest.mark.django_db(transaction=True)
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def own_limiter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Limiter]:
    """Counters of this test only: a run right after another on the same Redis starts from zero."""
    with isolated_limiter(monkeypatch, "limits-relay") as made:
        yield made


def test_the_request_over_the_rpm_limit_is_a_429_with_retry_after(gateway, alice, channel, sdk_for) -> None:
    alice.key.rpm_limit = 2
    alice.key.save()
    client = sdk_for(alice.raw_key)
    for _ in range(2):
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert refused.value.code == "rpm_limit_exceeded"
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.response.headers["x-relay-error-code"] == "rpm_limit_exceeded"


def test_an_anthropic_client_is_refused_in_anthropics_envelope(gateway, alice, channel) -> None:
    alice.key.daily_request_limit = 1
    alice.key.save()
    client = anthropic.Anthropic(base_url=gateway.url, api_key=alice.raw_key, max_retries=0)
    client.messages.create(model="gpt-test", max_tokens=20, messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="gpt-test", max_tokens=20, messages=MESSAGES)
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    assert "daily request limit (1)" in refused.value.body["error"]["message"]


def test_a_finished_stream_gives_its_concurrency_slot_back(gateway, alice, channel, sdk_for) -> None:
    alice.key.concurrency_limit = 1
    alice.key.save()
    client = sdk_for(alice.raw_key)
    for _ in range(3):
        chunks = list(client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True))
        assert chunks


def test_requests_refused_before_any_upstream_are_not_logged(gateway, alice, channel, sdk_for) -> None:
    alice.key.rpm_limit = 1
    alice.key.save()
    client = sdk_for(alice.raw_key)
    client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    gateway.watch.wait_idle()
    from usage import recorder

    recorder.flush()
    assert RequestLog.objects.count() == 1
