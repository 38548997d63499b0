"""Conformance cases (spec, last table): OpenAI chat and Responses clients against an OpenAI-compatible upstream."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import pytest

from tests.fakes.fixtures import (  # noqa: F401
    claude_upstream,
    claude_upstream_server,
    gemini_upstream,
    gemini_upstream_server,
    responses_upstream,
    responses_upstream_server,
)
from tests.gateway import openai_clients_support as support
from tests.gateway.openai_clients_support import (
    DONE,
    MODEL,
    Connect,
    chat_chunk,
    chat_stream_chunks,
    chat_usage,
    raw_post,
    sse_events,
)

pytestmark = pytest.mark.django_db(transaction=True)
# The support module's fixtures, bound here so pytest finds them.
scripted_openai_server, openai_fake, connect = support.scripted_openai_server, support.openai_fake, support.connect

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
PDF_B64 = base64.b64encode(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF").decode()


def responses(gateway, alice, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    return raw_post(gateway, alice, "/responses", body)


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage", "no-usage"])
def test_case_8_a_same_dialect_stream_passes_through_with_usage_only_when_asked_and_nothing_after_done(
    gateway, alice, connect: Connect, include_usage: bool
) -> None:
    fake = connect("openai")
    fake.raw_stream = [
        chat_chunk({"role": "assistant", "content": ""}, usage=None),
        chat_chunk({"content": "Same"}, usage=None),
        chat_chunk({"content": " dialect."}, usage=None),
        chat_chunk({}, "stop", usage=None),
        chat_chunk(None, usage=chat_usage(9, 3)),
        DONE,
        chat_chunk({"content": " after done"}, usage=None),
    ]
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    answer = raw_post(gateway, alice, "/chat/completions", body)
    assert fake.last.json["stream_options"]["include_usage"] is True
    assert fake.last.json["model"] == "upstream-model"
    assert answer.text.endswith("data: [DONE]\n\n")
    chunks = chat_stream_chunks(answer.text)
    assert "after done" not in answer.text
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Same dialect."
    with_usage = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert with_usage == [chunks[-1]] and chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["total_tokens"] == 12
    else:
        assert with_usage == [] and all(c["choices"] for c in chunks)


def test_case_10_instructions_become_the_first_system_message_and_developer_items_stay_developer(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("openai")
    items = [
        {"type": "message", "role": "developer", "content": "Prefer metric units."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "How far is it?"}]},
    ]
    answer = responses(gateway, alice, instructions="You are a travel agent.", input=items)
    assert answer.status_code == 200
    messages = fake.last.json["messages"]
    assert messages[0] == {"role": "system", "content": "You are a travel agent."}
    roles = [(m["role"], m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]) for m in messages]
    assert ("developer", "Prefer metric units.") in roles
    assert roles[-1] == ("user", "How far is it?")


def test_case_20_an_original_detail_image_is_high_and_an_input_file_becomes_a_chat_file_part(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("openai")
    content = [
        {"type": "input_text", "text": "Read both."},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}", "detail": "original"},
        {"type": "input_file", "filename": "report.pdf", "file_data": f"data:application/pdf;base64,{PDF_B64}"},
    ]
    assert responses(gateway, alice, input=[{"role": "user", "content": content}]).status_code == 200
    parts = fake.last.json["messages"][-1]["content"]
    (image,) = [p for p in parts if p["type"] == "image_url"]
    assert image["image_url"]["detail"] == "high"
    (file,) = [p for p in parts if p["type"] == "file"]
    assert file["file"]["filename"] == "report.pdf"
    assert file["file"]["file_data"].endswith(PDF_B64)


def test_case_35_a_stringified_part_array_tool_output_becomes_a_chat_tool_message_with_an_image(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("openai")
    output = json.dumps(
        [
            {"type": "input_text", "text": "The chart:"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}"},
        ]
    )
    items = [
        {"role": "user", "content": "Draw the chart"},
        {"type": "function_call", "call_id": "call_chart", "name": "chart", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_chart", "output": output},
    ]
    assert responses(gateway, alice, input=items).status_code == 200
    tool = fake.last.json["messages"][-1]
    assert (tool["role"], tool["tool_call_id"]) == ("tool", "call_chart")
    assert isinstance(tool["content"], list)
    (image,) = [p for p in tool["content"] if p["type"] == "image_url"]
    assert image["image_url"]["url"] == f"data:image/png;base64,{PNG_B64}"


def test_case_43_a_responses_json_object_format_becomes_a_chat_response_format(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("openai")
    assert responses(gateway, alice, input="Give me JSON", text={"format": {"type": "json_object"}}).status_code == 200
    assert fake.last.json["response_format"] == {"type": "json_object"}


def test_a_responses_stream_from_a_chat_upstream_has_numbered_events_and_no_done(
    gateway, alice, connect: Connect
) -> None:
    connect("openai").reply("Numbered events.")
    answer = responses(gateway, alice, input="Hi", stream=True)
    frames = sse_events(answer.text)
    assert all(name is not None for name, _ in frames)
    payloads = [json.loads(data) for _, data in frames]
    assert [p["sequence_number"] for p in payloads] == list(range(1, len(payloads) + 1))
    assert payloads[-1]["type"] == "response.completed"


def test_case_26_gemini_calls_without_ids_get_stable_chat_ids_and_results_pair_in_order(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("openai")
    weather = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Oslo and Rome?"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "cold"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"result": "warm"}}},
                ],
            },
        ],
        "tools": [{"functionDeclarations": [weather]}],
    }
    url = f"{gateway.url}/v1beta/models/{MODEL}:generateContent"
    sent = []
    for _ in range(2):
        answer = httpx.post(url, json=body, headers={"x-goog-api-key": alice.raw_key}, timeout=30)
        assert answer.status_code == 200, answer.text
        sent.append(fake.last.json["messages"])
    assert sent[0] == sent[1]
    (assistant,) = [m for m in sent[0] if m.get("tool_calls")]
    ids = [c["id"] for c in assistant["tool_calls"]]
    assert len(set(ids)) == 2 and all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids)
    assert [json.loads(c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        {"city": "Oslo"},
        {"city": "Rome"},
    ]
    tools = [m for m in sent[0] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tools] == ids
    assert ["cold" in json.dumps(m["content"]) for m in tools] == [True, False]
    assert ["warm" in json.dumps(m["content"]) for m in tools] == [False, True]
