"""OpenAI Chat Completions and Responses clients against every upstream family: the conformance matrix.

For each client × upstream family × stream/non-stream: a tool call round trip (the client sees the call in
its own shape, sends the result back, the upstream receives it paired with the call in its shape), usage
(client fields and the usage row, normalised per spec §4.8), and upstream errors before the first byte and
mid-stream. The numbered conformance cases live in ``test_conformance_openai_clients_<family>.py``.
"""

from __future__ import annotations

import json
from typing import Any

import openai
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
    DONE,
    FAMILIES,
    MODEL,
    Call,
    Connect,
    chat_chunk,
    chat_completion,
    chat_stream_chunks,
    chat_tool_stream,
    chat_usage,
    raw_post,
    responses_events,
    sdk,
    sse_events,
    tokens_of,
    usage_rows,
)

pytestmark = pytest.mark.django_db(transaction=True)
# The support module's fixtures, bound here so pytest finds them.
scripted_openai_server, openai_fake, connect = support.scripted_openai_server, support.openai_fake, support.connect

CLIENTS = ("chat", "resp")
MODES = pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
ARGS = {"city": "Paris", "unit": "celsius"}
RESULT = "sunny, 21 degrees"
ANSWER = "It is sunny in Paris."
QUESTION = "What is the weather in Paris?"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}


# --- the upstream side, per family -----------------------------------------------------------


def script_call(family: str, fake: Any, call: Call) -> None:
    """The upstream answers with one call to ``get_weather`` (Gemini: without an id, as the API does)."""
    if family == "openai":
        usage = chat_usage(20, 9)
        fake.raw_stream = chat_tool_stream([call], usage)
        fake.raw_json = chat_completion(None, usage, [call], "tool_calls")
    else:
        fake.reply("", tool_calls=[ToolCall(call.name, call.arguments, id=None if family == "gemini" else call.id)])


def script_text(family: str, fake: Any, text: str) -> None:
    if family == "openai":
        fake.raw_stream = fake.raw_json = None
        fake.reply(text)
    else:
        fake.reply(text, tool_calls=[])


def assert_upstream_got_result(family: str, body: dict[str, Any], call_id: str) -> None:
    """The second upstream request holds the call and, right after it, its result, in the family's shape."""
    if family == "openai":
        assistant, tool = body["messages"][-2:]
        assert assistant["role"] == "assistant"
        (sent,) = assistant["tool_calls"]
        assert (sent["id"], sent["type"], sent["function"]["name"]) == (call_id, "function", "get_weather")
        assert json.loads(sent["function"]["arguments"]) == ARGS
        assert tool == {"role": "tool", "tool_call_id": call_id, "content": RESULT}
    elif family == "claude":
        assistant, user = body["messages"][-2:]
        assert assistant["role"] == "assistant"
        (use,) = [b for b in assistant["content"] if b["type"] == "tool_use"]
        assert (use["id"], use["name"], use["input"]) == (call_id, "get_weather", ARGS)
        assert user["role"] == "user"
        (result,) = [b for b in user["content"] if b["type"] == "tool_result"]
        assert result["tool_use_id"] == call_id
        content = result["content"]
        assert content == RESULT or [b["text"] for b in content] == [RESULT]
    elif family == "gemini":
        model, user = body["contents"][-2:]
        assert model["role"] == "model"
        (part,) = [p for p in model["parts"] if "functionCall" in p]
        fc = part["functionCall"]
        assert (fc["name"], fc["args"]) == ("get_weather", ARGS)
        assert part["thoughtSignature"]  # the model's own, or the validator bypass (§4.9.7)
        assert user["role"] == "user"
        (fr,) = [p["functionResponse"] for p in user["parts"] if "functionResponse" in p]
        assert fr["name"] == "get_weather"
        assert fr["response"] == {"result": RESULT}
        assert fr.get("id", call_id) == call_id == fc.get("id", call_id)
    else:
        items = body["input"]
        (fc,) = [i for i in items if i.get("type") == "function_call"]
        (out,) = [i for i in items if i.get("type") == "function_call_output"]
        assert items.index(out) == items.index(fc) + 1
        assert (fc["call_id"], fc["name"], json.loads(fc["arguments"])) == (call_id, "get_weather", ARGS)
        assert (out["call_id"], out["output"]) == (call_id, RESULT)


# --- the client side ---------------------------------------------------------------------------


def chat_round(client: openai.OpenAI, messages: list[dict[str, Any]], stream: bool) -> dict[str, Any]:
    """One chat completion as a plain message dict (a stream is accumulated the way SDK users do)."""
    tools = [{"type": "function", "function": WEATHER_TOOL}]
    if not stream:
        completion = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
        choice = completion.choices[0]
        message = choice.message.model_dump(exclude_none=True)
        return {**message, "finish_reason": choice.finish_reason}
    content, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(model=MODEL, messages=messages, tools=tools, stream=True):
        assert chunk.usage is None
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "type": "function", "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    message: dict[str, Any] = {"role": "assistant", "content": content or None, "finish_reason": finish}
    if calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for _, c in sorted(calls.items())
        ]
    return message


def responses_round(client: openai.OpenAI, items: list[Any], stream: bool) -> Any:
    tools = [{"type": "function", **WEATHER_TOOL}]
    if not stream:
        return client.responses.create(model=MODEL, input=items, tools=tools)
    terminal = [
        e
        for e in client.responses.create(model=MODEL, input=items, tools=tools, stream=True)
        if e.type in ("response.completed", "response.incomplete", "response.failed", "error")
    ]
    assert [e.type for e in terminal] == ["response.completed"]
    return terminal[0].response


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("family", FAMILIES)
@MODES
def test_a_tool_call_round_trips_between_the_client_and_the_upstream(
    gateway, alice, connect: Connect, family: str, client: str, stream: bool
) -> None:
    fake = connect(family)
    upstream_id = {"openai": "call_conf0001", "claude": "toolu_01ConfTool", "codex": "call_conf0002"}.get(family, "")
    script_call(family, fake, Call(upstream_id, "get_weather", ARGS))
    api = sdk(gateway, alice)

    if client == "chat":
        messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
        first = chat_round(api, messages, stream)
        assert first["finish_reason"] == "tool_calls"
        (call,) = first["tool_calls"]
        assert call["type"] == "function" and call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == ARGS
        call_id = call["id"]
        assert call_id and (call_id == upstream_id or family == "gemini")
        script_text(family, fake, ANSWER)
        first.pop("finish_reason")
        messages += [first, {"role": "tool", "tool_call_id": call_id, "content": RESULT}]
        second = chat_round(api, messages, stream)
        assert (second["content"], second["finish_reason"]) == (ANSWER, "stop")
    else:
        items: list[Any] = [{"role": "user", "content": QUESTION}]
        first = responses_round(api, items, stream)
        assert first.status == "completed"
        (item,) = [i for i in first.output if i.type == "function_call"]
        assert item.name == "get_weather" and json.loads(item.arguments) == ARGS
        call_id = item.call_id
        assert call_id and (call_id == upstream_id or family == "gemini")
        script_text(family, fake, ANSWER)
        items += [o.model_dump(exclude_none=True) for o in first.output]
        items.append({"type": "function_call_output", "call_id": call_id, "output": RESULT})
        second = responses_round(api, items, stream)
        assert second.output_text == ANSWER

    assert len(fake.requests) == 2
    assert_upstream_got_result(family, fake.last.json, call_id)


# --- usage ---------------------------------------------------------------------------------------

# One upstream answer per family: 120 input tokens of which 100 cached, 30 output of which 10 reasoning
# (Claude reports no reasoning count and splits input into fresh, cache-write and cache-read tokens).
EXPECTED_USAGE = {
    "openai": {"input": 120, "output": 30, "cached": 100, "reasoning": 10},
    "claude": {"input": 120, "output": 30, "cached": 100, "reasoning": 0},
    "gemini": {"input": 120, "output": 30, "cached": 100, "reasoning": 10},
    "codex": {"input": 120, "output": 30, "cached": 100, "reasoning": 10},
}
TEXT = "Counted."


def script_usage(family: str, fake: Any) -> None:
    if family == "openai":
        usage = chat_usage(120, 30, cached=100, reasoning=10)
        fake.raw_stream = [
            chat_chunk({"role": "assistant", "content": ""}),
            chat_chunk({"content": TEXT}),
            chat_chunk({}, "stop"),
            chat_chunk(None, usage=usage),
            DONE,
        ]
        fake.raw_json = chat_completion(TEXT, usage)
    elif family == "claude":
        fake.reply(TEXT, prompt_tokens=15, cache_creation_tokens=5, cached_tokens=100, completion_tokens=30)
    elif family == "gemini":  # candidatesTokenCount excludes thoughtsTokenCount
        fake.reply(TEXT, prompt_tokens=120, cached_tokens=100, completion_tokens=20, reasoning_tokens=10)
    else:
        fake.reply(TEXT, prompt_tokens=120, cached_tokens=100, completion_tokens=30, reasoning_tokens=10)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("family", FAMILIES)
@MODES
def test_usage_reaches_the_client_and_the_usage_row_normalised(
    gateway, alice, connect: Connect, family: str, client: str, stream: bool
) -> None:
    script_usage(family, connect(family))
    want = EXPECTED_USAGE[family]
    messages = [{"role": "user", "content": "Count my tokens"}]

    if client == "chat":
        body: dict[str, Any] = {"model": MODEL, "messages": messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        answer = raw_post(gateway, alice, "/chat/completions", body)
        assert answer.status_code == 200, answer.text
        if stream:
            chunks = chat_stream_chunks(answer.text)
            with_usage = [c for c in chunks if c.get("usage")]
            assert with_usage == [chunks[-1]] and chunks[-1]["choices"] == []
            assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == TEXT
            usage = chunks[-1]["usage"]
        else:
            usage = answer.json()["usage"]
        assert usage["prompt_tokens"] == want["input"]
        assert usage["completion_tokens"] == want["output"]
        assert usage["total_tokens"] == want["input"] + want["output"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == want["cached"]
        assert usage["completion_tokens_details"]["reasoning_tokens"] == want["reasoning"]
    else:
        answer = raw_post(gateway, alice, "/responses", {"model": MODEL, "input": messages, "stream": stream})
        assert answer.status_code == 200, answer.text
        if stream:
            final = responses_events(answer.text)[-1]
            assert final["type"] == "response.completed"
            response = final["response"]
        else:
            response = answer.json()
        assert response["output"][-1]["content"][0]["text"] == TEXT
        usage = response["usage"]
        assert usage["input_tokens"] == want["input"]
        assert usage["output_tokens"] == want["output"]
        assert usage["total_tokens"] == want["input"] + want["output"]
        assert usage["input_tokens_details"]["cached_tokens"] == want["cached"]
        assert usage["output_tokens_details"]["reasoning_tokens"] == want["reasoning"]

    (row,) = usage_rows(gateway)
    assert (row.status_code, row.stream, row.requested_model) == (200, stream, MODEL)
    assert row.client_dialect == {"chat": "openai-chat", "resp": "openai-responses"}[client]
    assert tokens_of(row) == want
    assert row.total_tokens == want["input"] + want["output"]


# --- errors ----------------------------------------------------------------------------------------


REFUSALS = {  # status: (upstream message, client error type, client error code or None)
    400: ("max_tokens: too large for this model", "invalid_request_error", None),
    429: ("slow down, please", "rate_limit_error", "rate_limit_exceeded"),
    503: ("the model is overloaded", "server_error", None),
}


def script_rejection(family: str, fake: Any, status: int) -> None:
    """The upstream refuses before any byte: a 400, a 429 with a retry hint, or a 503."""
    message, error_type, code = REFUSALS[status]
    retry = {"retry-after": "17"} if status == 429 else {}
    if family == "openai":
        fake.fail(status, message, type_=error_type, code=code, headers=retry)
    elif family == "gemini" and status == 429:
        fake.rate_limit("17s", message)
    else:
        fake.fail(status, message, headers=retry)


@pytest.mark.parametrize("status", list(REFUSALS))
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("family", FAMILIES)
@MODES
def test_an_upstream_refusal_before_the_first_byte_keeps_its_status_in_the_client_envelope(
    gateway, alice, connect: Connect, family: str, client: str, stream: bool, status: int
) -> None:
    script_rejection(family, connect(family), status)
    if client == "chat":
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
        answer = raw_post(gateway, alice, "/chat/completions", body)
    else:
        answer = raw_post(gateway, alice, "/responses", {"model": MODEL, "input": "Hi", "stream": stream})

    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    message, error_type, code = REFUSALS[status]
    assert (error["message"], error["type"]) == (message, error_type)
    if code:
        assert error["code"] == code
    if status == 429 and family != "gemini":
        assert answer.headers["retry-after"] == "17"
    (row,) = usage_rows(gateway)
    assert row.status_code == status


def script_midstream_failure(family: str, fake: Any) -> None:
    """Some text, then the family's in-stream error (OpenAI: an ``error`` chunk, no ``[DONE]``)."""
    if family == "openai":
        fake.raw_stream = [
            chat_chunk({"role": "assistant", "content": ""}),
            chat_chunk({"content": "Partial"}),
            b'data: {"error":{"message":"upstream exploded","type":"server_error","code":null}}\n\n',
        ]
    else:
        fake.reply("Partial answer that never ends")
        after = {"claude": 5, "gemini": 2, "codex": 6}[family]
        fake.fail_midstream(after, "upstream exploded")


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_mid_stream_upstream_error_ends_the_stream_with_the_dialect_error(
    gateway, alice, connect: Connect, family: str, client: str
) -> None:
    script_midstream_failure(family, connect(family))
    if client == "chat":
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        answer = raw_post(gateway, alice, "/chat/completions", body)
        assert answer.status_code == 200
        frames = [data for _, data in sse_events(answer.text)]
        assert "[DONE]" not in frames
        *chunks, last = [json.loads(f) for f in frames]
        assert "Partial" in "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert set(last) == {"error"}
        assert last["error"]["message"] and last["error"]["type"]
    else:
        answer = raw_post(gateway, alice, "/responses", {"model": MODEL, "input": "Hi", "stream": True})
        assert answer.status_code == 200
        events = responses_events(answer.text)
        types = [e["type"] for e in events]
        assert "response.output_text.delta" in types
        assert types[-1] == "error" and "response.completed" not in types
        assert events[-1]["message"] and events[-1]["code"]
        seqs = [e["sequence_number"] for e in events]
        assert seqs == sorted(set(seqs))
    (row,) = usage_rows(gateway)
    assert row.status_code >= 500


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("family", ["claude", "codex"])
def test_a_non_stream_request_to_an_always_streaming_upstream_that_fails_mid_answer_is_an_error(
    gateway, alice, connect: Connect, family: str, client: str
) -> None:
    script_midstream_failure(family, connect(family))
    if client == "chat":
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        answer = raw_post(gateway, alice, "/chat/completions", body)
    else:
        answer = raw_post(gateway, alice, "/responses", {"model": MODEL, "input": "Hi"})
    assert answer.status_code >= 500
    error = answer.json()["error"]
    assert error["message"] == "upstream exploded" and error["type"] == "server_error"
    (row,) = usage_rows(gateway)
    assert row.status_code == answer.status_code
