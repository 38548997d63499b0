"""Conformance cases (spec, last table): OpenAI chat and Responses clients against a Gemini upstream."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
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
from tests.fakes.server import ThreadedServer, free_port
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

TEXT = "Gemini says hello to you."
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
GEMINI_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")


def chat(gateway, alice, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return raw_post(gateway, alice, "/chat/completions", body)


def function_tool(name: str) -> dict[str, Any]:
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}}
    return {"type": "function", "function": {"name": name, "description": f"The {name} tool", "parameters": parameters}}


def test_case_2_a_gemini_answer_becomes_a_chat_completion_with_its_usage(gateway, alice, connect: Connect) -> None:
    connect("gemini").reply(TEXT, prompt_tokens=11, completion_tokens=6)
    answer = chat(gateway, alice).json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == TEXT
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert (answer["usage"]["prompt_tokens"], answer["usage"]["total_tokens"]) == (11, 17)


def test_case_16_a_history_opening_with_the_assistant_gets_an_empty_user_turn_and_loses_the_prefill(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("gemini")
    messages = [
        {"role": "assistant", "content": "Welcome back."},
        {"role": "user", "content": "Continue the story."},
        {"role": "assistant", "content": "Once upon"},
    ]
    assert chat(gateway, alice, messages=messages).status_code == 200
    contents = fake.last.json["contents"]
    assert contents[0] == {"role": "user", "parts": [{"text": ""}]}
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[-1]["parts"] == [{"text": "Continue the story."}]


@pytest.fixture
def image_server() -> Iterator[str]:
    """A tiny HTTP server answering ``/cat.png`` with a PNG."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        found = scope["path"] == "/cat.png"
        headers = [(b"content-type", b"image/png" if found else b"text/plain")]
        await send({"type": "http.response.start", "status": 200 if found else 404, "headers": headers})
        await send({"type": "http.response.body", "body": PNG if found else b"not found"})

    server = ThreadedServer(app, name="image-server").start()
    yield server.url
    server.stop()


def test_case_18_a_remote_image_is_fetched_and_inlined_for_gemini(
    gateway, alice, connect: Connect, image_server: str, settings
) -> None:
    settings.CLIRELAY_MEDIA_ALLOW_PRIVATE = True
    fake = connect("gemini")
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"{image_server}/cat.png"}},
    ]
    assert chat(gateway, alice, messages=[{"role": "user", "content": content}]).status_code == 200
    (inline,) = [p["inlineData"] for p in fake.last.json["contents"][0]["parts"] if "inlineData" in p]
    assert inline == {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}


def test_case_18_an_unreachable_image_is_a_400_and_gemini_is_never_called(
    gateway, alice, connect: Connect, settings
) -> None:
    settings.CLIRELAY_MEDIA_ALLOW_PRIVATE = True
    fake = connect("gemini")
    url = f"http://127.0.0.1:{free_port()}/gone.png"
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    answer = chat(gateway, alice, messages=[{"role": "user", "content": content}])
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and url in error["message"]
    assert fake.requests == []


def test_case_25_two_gemini_function_calls_become_two_contiguous_function_call_items(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("gemini")
    fake.reply("", tool_calls=[ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_time", {"zone": "CET"})])
    body = {
        "model": MODEL,
        "input": "Weather and time?",
        "stream": True,
        "tools": [
            {"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}}
            for n in ("get_weather", "get_time")
        ],
    }
    events = responses_events(raw_post(gateway, alice, "/responses", body).text)
    added = [e for e in events if e["type"] == "response.output_item.added"]
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["item"]["type"] for e in added] == ["function_call", "function_call"]
    indexes = [e["output_index"] for e in added]
    assert indexes == list(range(indexes[0], indexes[0] + 2))
    call_ids = [e["item"]["call_id"] for e in done]
    assert len(set(call_ids)) == 2 and all(call_ids)
    assert [e["item"]["id"] for e in done] == [f"fc_{c}" for c in call_ids]
    assert [e["item"]["name"] for e in done] == ["get_weather", "get_time"]
    assert [json.loads(e["item"]["arguments"]) for e in done] == [{"city": "Oslo"}, {"zone": "CET"}]
    for event in added:
        item_id = event["item"]["id"]
        mine = [e["type"] for e in events if e.get("item_id") == item_id]
        assert "response.function_call_arguments.delta" in mine and "response.function_call_arguments.done" in mine
    final = events[-1]
    assert final["type"] == "response.completed"
    assert [i["call_id"] for i in final["response"]["output"] if i["type"] == "function_call"] == call_ids


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
        ("none", {"mode": "NONE"}),
    ],
    ids=["named", "none"],
)
def test_case_27_tool_choice_becomes_gemini_function_calling_config(
    gateway, alice, connect: Connect, choice: Any, config: dict[str, Any]
) -> None:
    fake = connect("gemini")
    assert chat(gateway, alice, tools=[function_tool("get_weather")], tool_choice=choice).status_code == 200
    assert fake.last.json["toolConfig"]["functionCallingConfig"] == config


def test_case_30_tool_results_become_function_responses_with_parsed_json_and_the_call_id(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("gemini")
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "ping", "arguments": "{}"}},
        {"id": "call_b", "type": "function", "function": {"name": "temp", "arguments": "{}"}},
    ]
    messages = [
        {"role": "user", "content": "Ping and temperature"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_a", "content": "ok"},
        {"role": "tool", "tool_call_id": "call_b", "content": '{"t":21}'},
    ]
    assert (
        chat(gateway, alice, messages=messages, tools=[function_tool("ping"), function_tool("temp")]).status_code == 200
    )
    responses = [
        p["functionResponse"] for c in fake.last.json["contents"] for p in c["parts"] if "functionResponse" in p
    ]
    assert [(r["name"], r["id"], r["response"]) for r in responses] == [
        ("ping", "call_a", {"result": "ok"}),
        ("temp", "call_b", {"result": {"t": 21}}),
    ]


LONG_NAME = "mcp__srv__" + "very_long_tool_name_" * 3
NAMES = ["my tool/v2", LONG_NAME[:70]]


def test_case_31_tool_names_gemini_rejects_are_sanitised_there_and_restored_for_the_client(
    gateway, alice, connect: Connect
) -> None:
    assert len(NAMES[1]) == 70
    fake = connect("gemini")
    tools = [function_tool(name) for name in NAMES]
    assert chat(gateway, alice, tools=tools).status_code == 200
    sent = [d["name"] for t in fake.last.json["tools"] for d in t.get("functionDeclarations", [])]
    assert len(sent) == 2 and all(GEMINI_NAME.match(n) for n in sent)
    fake.reply("", tool_calls=[ToolCall(sent[0], {"city": "Oslo"}), ToolCall(sent[1], {"city": "Rome"})])
    completion = sdk(gateway, alice).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Use both"}], tools=tools
    )
    assert [c.function.name for c in completion.choices[0].message.tool_calls] == NAMES


def test_case_38_a_budget_suffix_reaches_gemini_as_the_base_model_and_a_thinking_budget(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("gemini", "gemini-2.5-pro")
    assert chat(gateway, alice, model="gemini-2.5-pro(1024)").status_code == 200
    assert fake.last.path == "/v1beta/models/gemini-2.5-pro:generateContent"
    assert fake.last.json["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 1024


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name"],
    "additionalProperties": False,
}


def test_case_43_a_json_schema_response_format_reaches_gemini_unchanged(gateway, alice, connect: Connect) -> None:
    fake = connect("gemini")
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": SCHEMA}}
    assert chat(gateway, alice, response_format=fmt).status_code == 200
    config = fake.last.json["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == SCHEMA


def test_case_43_a_json_object_response_format_sets_only_the_gemini_mime_type(gateway, alice, connect: Connect) -> None:
    fake = connect("gemini")
    assert chat(gateway, alice, response_format={"type": "json_object"}).status_code == 200
    config = fake.last.json["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert "responseJsonSchema" not in config and "responseSchema" not in config


@pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
def test_case_46_a_gemini_max_tokens_stop_ends_a_responses_answer_incomplete(
    gateway, alice, connect: Connect, stream: bool
) -> None:
    connect("gemini").reply(TEXT, finish_reason="MAX_TOKENS")
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


@pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
@pytest.mark.parametrize(("native", "reason"), [("MAX_TOKENS", "length"), ("SAFETY", "content_filter")])
def test_case_47_gemini_finish_reasons_reach_chat_clients_in_the_openai_vocabulary(
    gateway, alice, connect: Connect, native: str, reason: str, stream: bool
) -> None:
    connect("gemini").reply(TEXT, finish_reason=native)
    answer = chat(gateway, alice, stream=stream)
    if stream:
        finishes = [c["choices"][0]["finish_reason"] for c in chat_stream_chunks(answer.text) if c["choices"]]
        assert [f for f in finishes if f] == [reason]
    else:
        choice = answer.json()["choices"][0]
        assert choice["finish_reason"] == reason


@pytest.mark.parametrize("client", ["chat", "resp"])
def test_case_50_gemini_thoughts_count_as_output_and_cached_tokens_are_reported(
    gateway, alice, connect: Connect, client: str
) -> None:
    connect("gemini").reply(TEXT, prompt_tokens=100, cached_tokens=40, completion_tokens=30, reasoning_tokens=50)
    if client == "chat":
        usage = chat(gateway, alice).json()["usage"]
        assert usage["completion_tokens"] == 80
        assert usage["completion_tokens_details"]["reasoning_tokens"] == 50
        assert usage["prompt_tokens_details"]["cached_tokens"] == 40
        assert usage["total_tokens"] == 180
    else:
        usage = raw_post(gateway, alice, "/responses", {"model": MODEL, "input": "Hi"}).json()["usage"]
        assert usage["output_tokens"] == 80
        assert usage["output_tokens_details"]["reasoning_tokens"] == 50
        assert usage["input_tokens_details"]["cached_tokens"] == 40
