"""Conformance cases (spec, last table): OpenAI chat and Responses clients against a Claude upstream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.fixtures import (  # noqa: F401
    claude_upstream,
    claude_upstream_server,
    gemini_upstream,
    gemini_upstream_server,
    responses_upstream,
    responses_upstream_server,
)
from tests.fakes.upstream import ToolCall
from tests.gateway import openai_clients_support as support
from tests.gateway.openai_clients_support import (
    MODEL,
    Connect,
    chat_stream_chunks,
    raw_post,
    responses_events,
    sdk,
)

pytestmark = pytest.mark.django_db(transaction=True)
# The support module's fixtures, bound here so pytest finds them.
scripted_openai_server, openai_fake, connect = support.scripted_openai_server, support.openai_fake, support.connect

TEXT = "Claude says hello to you."
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat(gateway, alice, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return raw_post(gateway, alice, "/chat/completions", body)


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def test_case_1_a_chat_stream_from_claude_starts_with_the_role_and_ends_with_done_without_usage(
    gateway, alice, connect: Connect
) -> None:
    connect("claude").reply(TEXT)
    answer = chat(gateway, alice, stream=True)
    assert answer.status_code == 200
    chunks = chat_stream_chunks(answer.text)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(d.get("content") or "" for d in deltas(chunks)) == TEXT
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c.get("usage") is None for c in chunks)


def test_case_4_a_responses_stream_from_claude_follows_the_event_sequence(gateway, alice, connect: Connect) -> None:
    connect("claude").reply(TEXT)
    answer = raw_post(gateway, alice, "/responses", {"model": MODEL, "input": "Hi", "stream": True})
    events = responses_events(answer.text)
    types = [e["type"] for e in events]
    text_deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(text_deltas) == TEXT
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(text_deltas),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(1, len(events) + 1))
    assert events[2]["item"]["type"] == "message"
    (message,) = events[-1]["response"]["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == TEXT
    assert events[-1]["response"]["status"] == "completed"


def test_case_9_system_and_developer_messages_become_claude_system_blocks_and_users_merge(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("claude")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "First question."},
        {"role": "user", "content": "Second question."},
        {"role": "assistant", "content": "Une réponse."},
        {"role": "user", "content": "Third question."},
    ]
    assert chat(gateway, alice, messages=messages).status_code == 200
    body = fake.last.json
    assert body["system"] == [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in French."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    first = body["messages"][0]["content"]
    texts = [first] if isinstance(first, str) else [b["text"] for b in first if b["type"] == "text"]
    assert "First question." in "\n".join(texts) and "Second question." in "\n".join(texts)


def test_case_17_data_url_and_https_images_become_base64_and_url_claude_sources(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("claude")
    content = [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    assert chat(gateway, alice, messages=[{"role": "user", "content": content}]).status_code == 200
    images = [b for b in fake.last.json["messages"][0]["content"] if b["type"] == "image"]
    assert [i["source"] for i in images] == [
        {"type": "base64", "media_type": "image/png", "data": PNG_B64},
        {"type": "url", "url": "https://example.com/cat.jpg"},
    ]


def test_case_21_a_required_tool_choice_becomes_any_and_the_tool_use_comes_back_as_a_tool_call(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("claude")
    fake.reply("", tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, id="toolu_01CaseTwentyOne")])
    completion = sdk(gateway, alice).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER], tool_choice="required"
    )
    body = fake.last.json
    assert body["tools"][0]["input_schema"]["type"] == "object"
    assert body["tools"][0]["name"] == "get_weather"
    assert body["tool_choice"] == {"type": "any"}
    choice = completion.choices[0]
    (call,) = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("toolu_01CaseTwentyOne", "function", "get_weather")
    assert isinstance(call.function.arguments, str) and json.loads(call.function.arguments) == {"city": "Oslo"}
    assert choice.finish_reason == "tool_calls"


def test_case_22_streamed_claude_tool_uses_are_announced_then_continued_by_ordinal(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("claude")
    calls = [
        ToolCall("get_weather", {"city": "Oslo", "days": 3}, id="toolu_01First"),
        ToolCall("get_time", {"zone": "Europe/Oslo"}, id="toolu_01Second"),
    ]
    fake.reply("Let me check.", tool_calls=calls, args_fragment_size=5)
    answer = chat(gateway, alice, stream=True, tools=[WEATHER])
    call_deltas = [tc for d in deltas(chat_stream_chunks(answer.text)) for tc in d.get("tool_calls") or []]
    for index, call in enumerate(calls):
        mine = [tc for tc in call_deltas if tc["index"] == index]
        announce, *rest = mine
        assert announce["id"] == call.id and announce["type"] == "function"
        assert announce["function"] == {"name": call.name, "arguments": ""}
        assert rest and all(set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"} for tc in rest)
        assert json.loads("".join(tc["function"]["arguments"] for tc in rest)) == call.arguments
    assert {tc["index"] for tc in call_deltas} == {0, 1}
    assert chat_stream_chunks(answer.text)[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_case_28_a_chat_tool_choice_none_reaches_claude_as_type_none(gateway, alice, connect: Connect) -> None:
    fake = connect("claude")
    assert chat(gateway, alice, tools=[WEATHER], tool_choice="none").status_code == 200
    assert fake.last.json["tool_choice"] == {"type": "none"}


def test_case_32_a_custom_tool_goes_to_claude_as_an_input_function_and_returns_as_a_custom_call(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("claude")
    fake.reply("", tool_calls=[ToolCall("run_sql", {"input": "SELECT 1;"}, id="toolu_01Custom")])
    tools = [{"type": "custom", "name": "run_sql", "description": "Runs one SQL statement"}]
    body = {"model": MODEL, "input": "Count the rows", "tools": tools, "stream": True}
    events = responses_events(raw_post(gateway, alice, "/responses", body).text)
    (declared,) = fake.last.json["tools"]
    schema = declared["input_schema"]
    assert declared["name"] == "run_sql"
    assert schema["properties"]["input"]["type"] == "string" and schema["required"] == ["input"]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    (item,) = [i for i in done if i["type"] == "custom_tool_call"]
    assert (item["name"], item["input"], item["call_id"]) == ("run_sql", "SELECT 1;", "toolu_01Custom")
    assert events[-1]["type"] == "response.completed"
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["custom_tool_call"]


def test_case_34_a_tool_message_with_text_and_image_becomes_a_tool_result_block_array(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("claude")
    call = {"id": "toolu_01Shot", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}}
    content = [
        {"type": "text", "text": "Here is the screen."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ]
    messages = [
        {"role": "user", "content": "Take a screenshot"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_01Shot", "content": content},
    ]
    assert chat(gateway, alice, messages=messages).status_code == 200
    (result,) = [b for b in fake.last.json["messages"][-1]["content"] if b["type"] == "tool_result"]
    assert result["tool_use_id"] == "toolu_01Shot"
    assert [b["type"] for b in result["content"]] == ["text", "image"]
    assert result["content"][0]["text"] == "Here is the screen."
    assert result["content"][1]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG_B64}


@pytest.mark.parametrize(
    ("model", "thinking"),
    [
        ("claude-sonnet-4-6", {"type": "adaptive"}),
        ("claude-sonnet-4-5", {"type": "enabled", "budget_tokens": 24576}),
    ],
)
def test_case_36_reasoning_effort_high_becomes_the_models_thinking_and_drops_temperature(
    gateway, alice, connect: Connect, model: str, thinking: dict[str, Any]
) -> None:
    fake = connect("claude", model)
    assert chat(gateway, alice, model=model, reasoning_effort="high", temperature=0.7).status_code == 200
    body = fake.last.json
    assert body["thinking"] == thinking
    assert "temperature" not in body
    if thinking["type"] == "adaptive":
        assert body["output_config"]["effort"] == "high"
    else:
        assert body["max_tokens"] > 24576


def test_case_39_claude_thinking_streams_as_reasoning_content_before_the_text_and_redacted_stays_hidden(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("claude")
    fake.reply(TEXT, reasoning="Thinking it through.", redacted_thinking="EncryptedRedactedBlob==")
    chunks = chat_stream_chunks(chat(gateway, alice, stream=True).text)
    kinds = [k for d in deltas(chunks) for k in ("reasoning_content", "content") if d.get(k)]
    assert kinds == sorted(kinds, key=lambda k: k == "content") and "reasoning_content" in kinds
    pieces = [d.get("reasoning_content") or "" for d in deltas(chunks)]
    assert "".join(pieces) == "Thinking it through."
    assert "".join(d.get("content") or "" for d in deltas(chunks)) == TEXT
    assert "EncryptedRedactedBlob" not in json.dumps(chunks)


def test_case_40_a_claude_thinking_block_becomes_a_closed_reasoning_item_before_the_message(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("claude")
    fake.reply(TEXT, reasoning="Let me think about it.")
    events = responses_events(
        raw_post(gateway, alice, "/responses", {"model": MODEL, "input": "Hi", "stream": True}).text
    )
    types = [e["type"] for e in events]
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["item"]["type"] for e in added] == ["reasoning", "message"]
    assert "response.reasoning_summary_text.delta" in types
    reasoning_done = next(e for e in events if e["type"] == "response.output_item.done")
    assert reasoning_done["item"]["type"] == "reasoning"
    assert reasoning_done["item"]["encrypted_content"] == fake.script.signature
    assert events.index(reasoning_done) < events.index(added[1])
    summary = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta")
    assert summary == "Let me think about it."
    usage = events[-1]["response"]["usage"]
    assert "reasoning_tokens" in usage["output_tokens_details"]


def test_case_45_stop_sequences_reach_claude_and_a_stop_sequence_end_is_stop(gateway, alice, connect: Connect) -> None:
    fake = connect("claude")
    fake.reply(TEXT, stop_sequence="END")
    answer = chat(gateway, alice, stop=["END"])
    assert fake.last.json["stop_sequences"] == ["END"]
    assert answer.json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
def test_case_46_a_claude_max_tokens_stop_ends_a_responses_answer_incomplete(
    gateway, alice, connect: Connect, stream: bool
) -> None:
    connect("claude").reply(TEXT, finish_reason="max_tokens")
    answer = raw_post(gateway, alice, "/responses", {"model": MODEL, "input": "Hi", "stream": stream})
    if stream:
        events = responses_events(answer.text)
        assert "response.completed" not in [e["type"] for e in events]
        assert events[-1]["type"] == "response.incomplete"
        response = events[-1]["response"]
    else:
        response = answer.json()
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


def test_case_49_claude_cache_usage_arrives_in_one_usage_chunk_before_done(gateway, alice, connect: Connect) -> None:
    fake = connect("claude")
    fake.reply(TEXT, prompt_tokens=10, cache_creation_tokens=5, cached_tokens=100, completion_tokens=20)
    answer = chat(gateway, alice, stream=True, stream_options={"include_usage": True})
    chunks = chat_stream_chunks(answer.text)
    assert [c for c in chunks if c.get("usage")] == [chunks[-1]]
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (115, 20, 135)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 100


def test_case_52_a_claude_429_before_any_event_is_a_429_in_the_openai_envelope(
    gateway, alice, connect: Connect
) -> None:
    connect("claude").rate_limit(retry_after=30)
    answer = chat(gateway, alice, stream=True)
    assert answer.status_code == 429
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert error["message"]
