"""The fake Responses upstream (Codex backend / OpenAI API), read back by the official ``openai`` SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.fixtures import CODEX_TOKEN
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.fakes.upstream import ToolCall

CODEX_BODY: dict[str, Any] = {"model": "gpt-5-codex", "input": "hi", "instructions": "", "store": False, "stream": True}


@pytest.fixture
def client(responses_upstream: FakeResponsesUpstream) -> openai.OpenAI:
    # A Codex channel's base URL is the root: the SDK then posts to {root}/responses, as Codex does.
    return openai.OpenAI(api_key=CODEX_TOKEN, base_url=responses_upstream.url, max_retries=0, timeout=10)


def codex_stream(client: openai.OpenAI, **overrides: Any) -> list[Any]:
    body = {**CODEX_BODY, **overrides}
    return list(client.responses.create(**body))


def test_a_stream_brings_reasoning_message_and_calls_in_order(
    responses_upstream: FakeResponsesUpstream, client: openai.OpenAI
) -> None:
    arguments = {"path": "src/app.py", "lines": [1, 20]}
    responses_upstream.reply(
        "I'll read it.",
        reasoning="Need the file.",
        tool_calls=[ToolCall("read_file", arguments, id="call_1")],
        prompt_tokens=100,
        cached_tokens=64,
        completion_tokens=30,
        reasoning_tokens=12,
    )

    events = codex_stream(client)

    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta") == "Need the file."
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "I'll read it."
    call_deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(call_deltas) > 1 and json.loads("".join(call_deltas)) == arguments
    added_reasoning = events[2].item
    final = events[-1].response
    reasoning, message, call = final.output
    assert reasoning.encrypted_content == responses_upstream.script.signature != added_reasoning.encrypted_content
    assert reasoning.summary[0].text == "Need the file."
    assert message.content[0].text == "I'll read it." and message.status == "completed"
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_1", "read_file", arguments)
    usage = final.usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens, usage.output_tokens) == (100, 64, 30)
    assert (usage.output_tokens_details.reasoning_tokens, usage.total_tokens) == (12, 130)
    sent = responses_upstream.last
    assert (sent.path, sent.bearer) == ("/responses", CODEX_TOKEN)


def test_the_deltas_of_two_calls_can_interleave(
    responses_upstream: FakeResponsesUpstream, client: openai.OpenAI
) -> None:
    first, second = {"query": "weather in Paris today"}, {"query": "time in Tokyo now"}
    responses_upstream.reply(
        "", tool_calls=[ToolCall("search", first), ToolCall("search", second)], interleave_tool_calls=True
    )

    events = codex_stream(client)

    call_events = [e for e in events if e.type.startswith("response.function_call_arguments.delta")]
    order = [e.output_index for e in call_events]
    assert order[:4] == [0, 1, 0, 1]
    for index, arguments in ((0, first), (1, second)):
        assert json.loads("".join(e.delta for e in call_events if e.output_index == index)) == arguments
    types = [e.type for e in events]
    assert types[2:4] == ["response.output_item.added"] * 2  # both calls are announced before any delta


def test_running_out_of_tokens_ends_with_response_incomplete(
    responses_upstream: FakeResponsesUpstream, client: openai.OpenAI
) -> None:
    responses_upstream.reply("Partial answ", finish_reason="max_output_tokens")

    events = codex_stream(client)

    terminal = events[-1]
    assert terminal.type == "response.incomplete"
    assert terminal.response.status == "incomplete"
    assert terminal.response.incomplete_details.reason == "max_output_tokens"
    assert terminal.response.output[0].status == "incomplete"


def test_codex_can_complete_with_an_empty_output(
    responses_upstream: FakeResponsesUpstream, client: openai.OpenAI
) -> None:
    responses_upstream.reply("Done.", empty_completed_output=True)

    events = codex_stream(client)

    assert events[-1].response.output == []
    assert [e.item.content[0].text for e in events if e.type == "response.output_item.done"] == ["Done."]


def test_a_usage_limit_is_a_429_with_reset_times(
    responses_upstream: FakeResponsesUpstream, client: openai.OpenAI
) -> None:
    responses_upstream.usage_limit(resets_in_seconds=900)

    with pytest.raises(openai.RateLimitError) as caught:
        codex_stream(client)

    error = caught.value.body
    assert error["type"] == "usage_limit_reached" and error["resets_in_seconds"] == 900
    assert error["resets_at"] > 900


@pytest.mark.parametrize("failed_event", [False, True])
def test_a_failure_mid_stream_arrives_as_an_event_without_a_terminal_one(
    responses_upstream: FakeResponsesUpstream, client: openai.OpenAI, failed_event: bool
) -> None:
    responses_upstream.fail_midstream(
        after_events=3, message="upstream overloaded", code="server_is_overloaded", failed_event=failed_event
    )

    events = codex_stream(client)

    assert [e.sequence_number for e in events] == [0, 1, 2, 3]
    last = events[-1]
    if failed_event:
        assert last.type == "response.failed"
        assert (last.response.error.code, last.response.error.message) == (
            "server_is_overloaded",
            "upstream overloaded",
        )
    else:
        assert (last.type, last.code, last.message) == ("error", "server_is_overloaded", "upstream overloaded")
    assert not responses_upstream.last.completed


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"store": True}, "Store must be set to false"),
        ({"stream": False}, "Stream must be set to true"),
        ({"temperature": 0.2}, "Unsupported parameter: temperature"),
        ({"max_output_tokens": 100}, "Unsupported parameter: max_output_tokens"),
    ],
)
def test_the_codex_backend_rejects_what_codex_rejects(
    responses_upstream: FakeResponsesUpstream, overrides: dict[str, Any], detail: str
) -> None:
    response = httpx.post(
        f"{responses_upstream.url}/responses",
        json={**CODEX_BODY, **overrides},
        headers={"authorization": f"Bearer {CODEX_TOKEN}"},
    )

    assert (response.status_code, response.json()) == (400, {"detail": detail})


def test_instructions_are_required_and_the_bearer_is_checked(responses_upstream: FakeResponsesUpstream) -> None:
    url = f"{responses_upstream.url}/responses"
    no_instructions = {k: v for k, v in CODEX_BODY.items() if k != "instructions"}

    missing = httpx.post(url, json=no_instructions, headers={"authorization": f"Bearer {CODEX_TOKEN}"})
    wrong = httpx.post(url, json=CODEX_BODY, headers={"authorization": "Bearer nope"})

    assert missing.json() == {"detail": "Instructions are required"}
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_openai_mode_answers_json_when_not_streaming(responses_upstream: FakeResponsesUpstream) -> None:
    responses_upstream.script.mode = "openai"
    responses_upstream.reply("Plain.", reasoning="brief", reasoning_tokens=3)
    client = openai.OpenAI(api_key=CODEX_TOKEN, base_url=f"{responses_upstream.url}/v1", max_retries=0, timeout=10)

    response = client.responses.create(model="gpt-5", input="hi", temperature=0.5)
    streamed = list(client.responses.create(model="gpt-5", input="hi", stream=True))

    assert response.output_text == "Plain." and response.status == "completed"
    assert response.usage.output_tokens_details.reasoning_tokens == 3
    assert streamed[-1].type == "response.completed"
    assert responses_upstream.last.path == "/v1/responses"
