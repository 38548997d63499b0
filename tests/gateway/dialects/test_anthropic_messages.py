"""Anthropic Messages: Claude clients in, Claude upstream out, streams both ways (translation level).

Conformance numbers (C#) and edge-case numbers (§6 #) refer to the translation spec; each test covers
the Anthropic side of its case.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway import ir
from gateway.dialects import BadRequest, anthropic_messages, anthropic_stream
from gateway.dialects import anthropic_messages as am
from gateway.thinking import ThinkingError

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "anthropic_messages"


def fixture_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return data


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


CLAUDE_CODE = fixture_json("claude_code_request.json")
HEADER_BETAS = fixture_json("claude_code_headers.json")["anthropic-beta"].split(",")


def parsed_stream(data: bytes, piece: int = 0, req: ir.Request | None = None) -> list[ir.Event]:
    parser = am.StreamParser(req)
    size = piece or len(data)
    events = [e for i in range(0, len(data), size) for e in parser.feed(data[i : i + size])]
    return events + parser.finish()


def frames(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Anthropic SSE bytes as (event name, payload) pairs, checking the name matches the payload type."""
    out = []
    for raw in data.decode().split("\n\n"):
        if not raw.strip():
            continue
        name_line, data_line = raw.split("\n")
        name, payload = name_line.removeprefix("event: "), orjson.loads(data_line.removeprefix("data: "))
        assert payload["type"] == name
        out.append((name, payload))
    return out


def rendered(events: list[ir.Event], req: ir.Request | None = None, estimate: int = 0) -> list[tuple[str, Any]]:
    renderer = am.StreamRenderer(req or ir.Request(model="claude-client-model"), input_tokens_estimate=estimate)
    return frames(b"".join(renderer.feed(e) for e in events) + renderer.finish())


def names(stream: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in stream]


def blocks(stream: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Each content block: its start payload, its deltas and whether it was stopped, by index."""
    found: dict[int, dict[str, Any]] = {}
    for name, payload in stream:
        if name == "content_block_start":
            found[payload["index"]] = {"start": payload["content_block"], "deltas": [], "stopped": False}
        elif name == "content_block_delta":
            found[payload["index"]]["deltas"].append(payload["delta"])
        elif name == "content_block_stop":
            found[payload["index"]]["stopped"] = True
    return [found[i] for i in sorted(found)]


def claude_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-opus-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(fields)
    return body


def ir_request(*messages: ir.Message, **fields: Any) -> ir.Request:
    fields.setdefault("model", "claude-opus-5")
    fields.setdefault("source", "openai")
    return ir.Request(messages=list(messages), **fields)


def user(*parts: ir.Part) -> ir.Message:
    return ir.Message("user", list(parts))


def assistant(*parts: ir.Part) -> ir.Message:
    return ir.Message("assistant", list(parts))


# --- client side: parsing what Claude clients send ---------------------------------------------


def test_a_claude_code_request_with_a_mid_conversation_system_message_is_accepted() -> None:
    req = am.parse_request(CLAUDE_CODE, HEADER_BETAS)  # C12, C13, C14: never a 400
    top = [s for s in req.system if s.position is None]
    anchored = [s for s in req.system if s.position is not None]
    assert [p.text for s in top for p in s.parts] == [
        "You are Claude Code, Anthropic's official CLI for Claude.",
        CLAUDE_CODE["system"][2]["text"],
    ]
    assert top[0].parts[0].cache_control == {"type": "ephemeral", "ttl": "1h"}
    assert len(anchored) == 1 and anchored[0].position == 3 == len(req.messages)
    assert anchored[0].parts[0].text.startswith("Plan mode is active.")
    assert [m.role for m in req.messages] == ["user", "assistant", "user"]


def test_the_attribution_block_is_kept_out_of_the_ir_system_text() -> None:
    req = am.parse_request(CLAUDE_CODE, HEADER_BETAS)  # D3.4, §6 #6: no other family can see it
    texts = [p.text for s in req.system for p in s.parts]
    assert not any(am.ATTRIBUTION_PREFIX in t for t in texts)
    assert req.extensions["claude"]["_attribution"] == [
        {"position": None, "index": 0, "block": CLAUDE_CODE["system"][0]}
    ]


def test_header_and_body_betas_are_merged_in_order_without_duplicates() -> None:
    req = am.parse_request(CLAUDE_CODE, HEADER_BETAS)  # D3.5
    assert req.betas == [*HEADER_BETAS, "fallback-credit-2026-06-01"]
    assert "mid-conversation-system-2026-04-07" in req.betas


def test_claude_only_body_fields_ride_in_the_claude_extensions() -> None:
    req = am.parse_request(CLAUDE_CODE, HEADER_BETAS)  # D3.6: other families ignore them
    ext = req.extensions["claude"]
    assert ext["context_management"] == CLAUDE_CODE["context_management"]
    assert "output_config" not in ext  # the effort lives in ir.Thinking
    assert ext["_tool_extras"] == {"WebFetch": {"defer_loading": True}, "Bash": {"eager_input_streaming": True}}
    assert req.user == CLAUDE_CODE["metadata"]["user_id"]
    assert req.stream is True and req.max_tokens == 32000 and req.source == "claude"


def test_history_blocks_become_neutral_parts() -> None:
    req = am.parse_request(CLAUDE_CODE, HEADER_BETAS)
    reasoning, text, call = req.messages[1].parts
    assert isinstance(reasoning, ir.Reasoning) and reasoning.family == "claude"
    assert reasoning.signature == CLAUDE_CODE["messages"][1]["content"][0]["signature"]
    assert text == ir.Text("Let me read the file.")
    assert call == ir.ToolCall("toolu_01AbCdEf", "Read", '{"file_path":"/repo/orders.py"}')
    result = req.messages[2].parts[0]
    assert isinstance(result, ir.ToolResult) and result.content[0] == ir.Text(
        "     1\tdef parse_order(raw):\n     2\t    return Order(**json.loads(raw))\n"
    )


def test_a_tool_result_carries_the_name_of_the_call_it_answers() -> None:
    body = claude_body(  # C29 (R13)
        messages=[
            {"role": "user", "content": "where is my order?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_01AbCdEf", "name": "lookup_order", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_01AbCdEf", "content": "shipped"}],
            },
        ]
    )
    result = am.parse_request(body).messages[2].parts[0]
    assert isinstance(result, ir.ToolResult)
    assert (result.call_id, result.name, result.content) == ("toolu_01AbCdEf", "lookup_order", [ir.Text("shipped")])


def test_a_tool_result_with_text_and_an_image_keeps_both_parts_and_the_error_flag() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    content = [{"type": "text", "text": "screenshot"}, image]
    body = claude_body(  # C33
        messages=[
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": content, "is_error": True}],
            }
        ]
    )
    result = am.parse_request(body).messages[0].parts[0]
    assert isinstance(result, ir.ToolResult) and result.is_error
    assert result.content == [ir.Text("screenshot"), ir.Image(data="iVBORw0KGgo=", media_type="image/png")]


@pytest.mark.parametrize(
    ("block", "part"),
    [
        (
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            ir.Image(url="https://example.com/cat.png"),
        ),
        (
            {
                "type": "document",
                "title": "spec.pdf",
                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            },
            ir.File(data="JVBERi0=", media_type="application/pdf", filename="spec.pdf"),
        ),
        (
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}},
            ir.File(data="aGVsbG8=", media_type="text/plain"),
        ),
        (
            {"type": "redacted_thinking", "data": "EmwKAh"},
            ir.Reasoning(signature="EmwKAh", family="claude", redacted=True),
        ),
        ({"type": "thinking", "thinking": "hm", "signature": "gAAAAABo"}, ir.Reasoning("hm", "gAAAAABo", "responses")),
        ({"type": "thinking", "thinking": "hm", "signature": "gemini#CiQB"}, ir.Reasoning("hm", "CiQB", "gemini")),
        ({"type": "thinking", "thinking": "hm", "signature": ""}, ir.Reasoning("hm", "", None)),
    ],
)
def test_content_blocks_become_neutral_parts_and_signatures_know_their_family(
    block: dict[str, Any], part: ir.Part
) -> None:
    req = am.parse_request(claude_body(messages=[{"role": "assistant", "content": [block]}]))
    assert req.messages[0].parts == [part]


@pytest.mark.parametrize(
    ("fields", "thinking"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 8192}}, ir.Thinking(mode="budget", budget=8192)),  # C37
        ({"thinking": {"type": "enabled", "budget_tokens": 0}}, ir.Thinking(mode="none", budget=0)),
        ({"thinking": {"type": "enabled"}}, ir.Thinking(mode="auto", budget=-1)),
        ({"thinking": {"type": "disabled"}}, ir.Thinking(mode="none", budget=0)),
        (
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}},
            ir.Thinking(mode="level", level="max"),
        ),
        ({"thinking": {"type": "adaptive"}}, ir.Thinking(mode="auto", budget=-1)),
        (
            {"thinking": {"type": "adaptive", "display": "omitted"}},
            ir.Thinking(mode="auto", budget=-1, include_thoughts=False),
        ),
        (
            {"thinking": {"type": "adaptive", "display": "summarized"}, "output_config": {"effort": "low"}},
            ir.Thinking(mode="level", level="low", include_thoughts=True),
        ),
        ({"output_config": {"effort": "low"}}, None),
    ],
)
def test_thinking_settings_become_the_neutral_thinking(fields: dict[str, Any], thinking: ir.Thinking | None) -> None:
    assert am.parse_request(claude_body(**fields)).thinking == thinking


def test_an_effort_without_adaptive_thinking_stays_for_claude_only() -> None:
    req = am.parse_request(claude_body(output_config={"effort": "low", "format": {"type": "json_schema"}}))
    assert req.extensions["claude"]["output_config"] == {"effort": "low", "format": {"type": "json_schema"}}


def test_sampling_stops_limits_and_service_fields_are_read() -> None:
    body = claude_body(  # C44 (anth side)
        max_tokens=50,
        stop_sequences=["END"],
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        speed="fast",
        metadata={"user_id": "u1"},
    )
    req = am.parse_request(body)
    assert (req.max_tokens, req.stop, req.temperature, req.top_p, req.top_k) == (50, ["END"], 0.2, 0.9, 40)
    assert req.service_tier == "priority" and req.user == "u1"  # speed fast is priority elsewhere (D3.6)
    assert req.extensions["claude"]["speed"] == "fast"


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, ir.ToolChoice("auto"), None),
        ({"type": "any"}, ir.ToolChoice("required"), None),
        ({"type": "tool", "name": "f"}, ir.ToolChoice("tool", "f"), None),
        ({"type": "none"}, ir.ToolChoice("none"), None),  # C28 (R12)
        ({"type": "auto", "disable_parallel_tool_use": True}, ir.ToolChoice("auto", parallel=False), False),
    ],
)
def test_tool_choice_is_read(choice: dict[str, Any], expected: ir.ToolChoice, parallel: bool | None) -> None:
    req = am.parse_request(claude_body(tool_choice=choice))
    assert req.tool_choice == expected and req.parallel_tool_calls == parallel


def test_typed_server_tools_become_builtins() -> None:
    web = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3, "allowed_domains": []}
    fn = {"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}, "strict": True}
    tools = am.parse_request(claude_body(tools=[web, fn])).tools
    assert tools[0] == ir.Tool("web_search", kind="builtin", builtin=web)
    assert tools[1] == ir.Tool("f", "d", {"type": "object", "properties": {}}, strict=True)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        (claude_body(messages=[]), "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens: field required"),
        (claude_body(max_tokens="lots"), "max_tokens"),
        (claude_body(messages=[{"role": "tool", "content": "x"}]), "role"),
        (claude_body(messages=[{"role": "user", "content": 7}]), "messages.0.content"),
        (claude_body(messages=[{"role": "user", "content": [{"text": "no type"}]}]), "messages.0.content.0"),
        (claude_body(tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (claude_body(tool_choice={"type": "tool"}), "tool_choice.name"),
        (claude_body(thinking={"type": "maybe"}), "thinking.type"),
        (claude_body(thinking={"type": "enabled", "budget_tokens": "x"}), "budget_tokens"),
        (claude_body(stop_sequences="END"), "stop_sequences"),
        (claude_body(tools=[{"description": "nameless"}]), "tools.0.name"),
        (claude_body(temperature="hot"), "temperature"),
    ],
)
def test_it_rejects_invalid_bodies_with_a_clear_reason(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        am.parse_request(body)


def test_count_tokens_bodies_need_no_max_tokens_and_accept_mid_conversation_system() -> None:
    body = {k: v for k, v in CLAUDE_CODE.items() if k not in ("max_tokens", "stream", "metadata")}
    req = am.parse_count_tokens_request(body, HEADER_BETAS)  # C56, D3
    assert req.max_tokens is None and any(s.position == 3 for s in req.system)


# --- client side: answers for Claude clients ------------------------------------------------


def test_a_non_stream_answer_has_the_messages_shape() -> None:
    resp = ir.Response(
        id="msg_1",
        model="gpt-5",
        parts=[
            ir.Reasoning("think", "gAAAAABsig", "responses"),
            ir.Text("hello"),
            ir.ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
        ],
        finish=ir.Finish("tool_calls", "tool_calls"),
        usage=ir.Usage(input_tokens=120, output_tokens=7, cached_tokens=100),
    )
    assert am.render_response(resp, ir.Request(model="alias")) == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "gpt-5",
        "content": [
            {"type": "thinking", "thinking": "think", "signature": "gAAAAABsig"},
            {"type": "text", "text": "hello"},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 7,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 0,
        },
    }


@pytest.mark.parametrize(
    ("finish", "stop_reason", "stop_sequence"),
    [
        (ir.Finish("stop"), "end_turn", None),
        (ir.Finish("stop_sequence", "stop_sequence", "END"), "stop_sequence", "END"),
        (ir.Finish("length", "MAX_TOKENS"), "max_tokens", None),  # C48
        (ir.Finish("length", "model_context_window_exceeded"), "model_context_window_exceeded", None),
        (ir.Finish("content_filter", "SAFETY"), "refusal", None),
        (ir.Finish("refusal", "refusal"), "refusal", None),
        (ir.Finish("pause_turn", "pause_turn"), "pause_turn", None),
        (ir.Finish("other", "OTHER"), "end_turn", None),
        (ir.Finish("tool_calls", "tool_calls"), "end_turn", None),  # the upstream said so, no tool came
    ],
)
def test_finish_reasons_become_claude_stop_reasons(
    finish: ir.Finish, stop_reason: str, stop_sequence: str | None
) -> None:
    answer = am.render_response(ir.Response(parts=[ir.Text("x")], finish=finish), ir.Request(model="m"))
    assert (answer["stop_reason"], answer["stop_sequence"]) == (stop_reason, stop_sequence)


def test_tool_names_an_upstream_changed_are_restored_for_claude_clients() -> None:
    req = ir.Request(model="m", tools=[ir.Tool("Read"), ir.Tool("mcp__fs__list")])  # §6 #16
    resp = ir.Response(parts=[ir.ToolCall("t1", "read", "{}"), ir.ToolCall("t2", "_mcp__fs__list", "not json")])
    content = am.render_response(resp, req)["content"]
    assert [(b["name"], b["input"]) for b in content] == [("Read", {}), ("mcp__fs__list", {})]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),  # C53
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_errors_carry_the_anthropic_type_for_their_status(status: int, kind: str) -> None:
    assert am.error_body(status, "boom") == {"type": "error", "error": {"type": kind, "message": "boom"}}
    assert frames(am.stream_error(status, "boom")) == [("error", am.error_body(status, "boom"))]


# --- client side: the stream a Claude client sees -------------------------------------------


def test_a_plain_text_stream_has_the_exact_event_sequence() -> None:
    events: list[ir.Event] = [ir.Start(id="chatcmpl-1", model="gpt-4o"), ir.TextDelta("Hel"), ir.TextDelta("lo")]
    events += [ir.UsageUpdate(ir.Usage(input_tokens=9, output_tokens=2)), ir.End(ir.Finish("stop", "stop"))]
    stream = rendered(events, estimate=42)  # C3
    assert names(stream) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = stream[0][1]["message"]
    assert start["usage"]["input_tokens"] == 42 and start["model"] == "gpt-4o" and start["content"] == []
    assert stream[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert "".join(p["delta"]["text"] for n, p in stream if n == "content_block_delta") == "Hello"
    assert stream[5][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert stream[5][1]["usage"]["input_tokens"] == 9 and stream[5][1]["usage"]["output_tokens"] == 2


@pytest.mark.parametrize(
    ("start_usage", "estimate", "input_tokens"),
    [
        (ir.Usage(input_tokens=115, cached_tokens=100, cache_write_tokens=5), 999, 10),
        (None, 321, 321),
        (ir.Usage(), 0, 1),
    ],
)
def test_message_start_input_tokens_are_never_zero(
    start_usage: ir.Usage | None, estimate: int, input_tokens: int
) -> None:
    stream = rendered([ir.Start(usage=start_usage), ir.End(ir.Finish())], estimate=estimate)
    assert stream[0][1]["message"]["usage"]["input_tokens"] == input_tokens


def test_usage_arriving_after_the_finish_lands_in_message_delta_and_nothing_follows_message_stop() -> None:
    renderer = am.StreamRenderer(ir.Request(model="m"), input_tokens_estimate=50)  # C51, §6 #30
    out = renderer.feed(ir.Start()) + renderer.feed(ir.TextDelta("ok"))
    out += renderer.feed(ir.UsageUpdate(ir.Usage(input_tokens=120, output_tokens=7, cached_tokens=100)))
    out += renderer.feed(ir.End(ir.Finish("stop")))
    late = (
        renderer.feed(ir.UsageUpdate(ir.Usage(output_tokens=99))) + renderer.feed(ir.TextDelta("x")) + renderer.finish()
    )
    stream = frames(out)
    assert late == b""
    assert names(stream)[-2:] == ["message_delta", "message_stop"]
    assert stream[-2][1]["usage"] == {
        "input_tokens": 20,
        "output_tokens": 7,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }


def test_parallel_calls_with_interleaved_fragments_become_sequential_blocks() -> None:
    events: list[ir.Event] = [  # C23 (R8): the second call is announced once its name is known
        ir.Start(id="chatcmpl-1"),
        ir.ToolCallStart(0, "call_a", "get_weather"),
        ir.ToolCallDelta(0, '{"city":'),
        ir.ToolCallDelta(1, '{"q":'),  # fragments of call 1 before its announce are kept
        ir.ToolCallStart(1, "call_b", "search"),
        ir.ToolCallDelta(1, '"news"'),
        ir.ToolCallDelta(0, '"Paris"}'),
        ir.ToolCallDelta(1, "}"),
        ir.ToolCallEnd(0),
        ir.ToolCallEnd(1),
        ir.End(ir.Finish("tool_calls", "tool_calls")),
    ]
    stream = rendered(events)
    found = blocks(stream)
    assert [b["start"]["id"] for b in found] == ["call_a", "call_b"]
    assert [orjson.loads("".join(d["partial_json"] for d in b["deltas"])) for b in found] == [
        {"city": "Paris"},
        {"q": "news"},
    ]
    _assert_blocks_never_interleave(stream)
    assert stream[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_a_second_item_waits_until_the_first_block_stops() -> None:
    events: list[ir.Event] = [  # C24, §6 #12: Codex interleaves two items' argument deltas
        ir.Start(),
        ir.ToolCallStart(0, "call_1", "read"),
        ir.ToolCallStart(1, "call_2", "read"),
        ir.ToolCallDelta(1, '{"path":"b"}'),
        ir.TextDelta("deferred text"),
        ir.ToolCallDelta(0, '{"path":"a"}'),
        ir.ToolCallEnd(1),
        ir.ToolCallEnd(0),
        ir.End(ir.Finish("tool_calls")),
    ]
    stream = rendered(events)
    found = blocks(stream)
    assert [b["start"]["type"] for b in found] == ["tool_use", "tool_use", "text"]
    assert [b["deltas"] for b in found[:2]] == [
        [{"type": "input_json_delta", "partial_json": '{"path":"a"}'}],
        [{"type": "input_json_delta", "partial_json": '{"path":"b"}'}],
    ]
    _assert_blocks_never_interleave(stream)


def test_tool_calls_the_upstream_never_ends_are_closed_at_the_end() -> None:
    events: list[ir.Event] = [ir.ToolCallStart(0, "c0", "f"), ir.ToolCallStart(1, "c1", "g")]
    events += [ir.ToolCallDelta(1, "{}"), ir.ToolCallDelta(0, "{}"), ir.End(ir.Finish("tool_calls"))]
    found = blocks(rendered(events))
    assert [(b["start"]["id"], len(b["deltas"]), b["stopped"]) for b in found] == [("c0", 1, True), ("c1", 1, True)]


def _assert_blocks_never_interleave(stream: list[tuple[str, Any]]) -> None:
    open_index = None
    expected_next = 0
    for name, payload in stream:
        if name == "content_block_start":
            assert open_index is None and payload["index"] == expected_next
            open_index, expected_next = payload["index"], expected_next + 1
        elif name == "content_block_delta":
            assert payload["index"] == open_index
        elif name == "content_block_stop":
            assert payload["index"] == open_index
            open_index = None


def test_a_reasoning_item_in_several_parts_is_one_thinking_block_with_one_signature() -> None:
    events: list[ir.Event] = [ir.Start(), ir.ReasoningDelta("part one"), ir.ReasoningDelta("\n\n")]
    events += [ir.ReasoningDelta("part two"), ir.ReasoningDone("gAAAAABfinal", "responses"), ir.TextDelta("answer")]
    stream = rendered([*events, ir.End(ir.Finish())])  # C41, §6 #36
    thinking = blocks(stream)[0]
    assert thinking["start"]["type"] == "thinking"
    assert "".join(d.get("thinking", "") for d in thinking["deltas"]) == "part one\n\npart two"
    assert thinking["deltas"][-1] == {"type": "signature_delta", "signature": "gAAAAABfinal"}
    assert [d["type"] for d in thinking["deltas"]].count("signature_delta") == 1
    stop_at = stream.index(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    assert stream[stop_at - 1][1]["delta"]["type"] == "signature_delta"


def test_redacted_and_foreign_reasoning_reach_claude_clients_in_their_own_blocks() -> None:
    events: list[ir.Event] = [ir.ReasoningDelta("visible"), ir.ReasoningDone("EmwK", "claude", redacted=True)]
    events += [ir.ReasoningDone("CiQBsig", "gemini"), ir.End(ir.Finish())]
    found = blocks(rendered(events))
    assert [b["start"]["type"] for b in found] == ["thinking", "redacted_thinking", "thinking"]
    assert found[0]["deltas"] == [{"type": "thinking_delta", "thinking": "visible"}]  # closed without a signature
    assert found[1]["start"]["data"] == "EmwK"
    assert found[2]["deltas"] == [{"type": "signature_delta", "signature": "gemini#CiQBsig"}]


def test_an_upstream_error_mid_stream_becomes_an_error_event_and_ends_the_stream() -> None:
    renderer = am.StreamRenderer(ir.Request(model="m"))  # C55
    out = renderer.feed(ir.Start()) + renderer.feed(ir.TextDelta("partial"))
    out += renderer.feed(ir.StreamError(529, "Overloaded"))
    assert renderer.feed(ir.TextDelta("more")) + renderer.finish() == b""
    stream = frames(out)
    assert stream[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert "message_stop" not in names(stream)


def test_a_stream_that_stops_without_an_end_is_closed_by_finish() -> None:
    stream = rendered([ir.Start(), ir.ToolCallStart(0, "c", "f"), ir.ToolCallDelta(0, '{"a":1}')])
    assert names(stream)[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert stream[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_a_ping_is_a_frame_claude_clients_accept() -> None:
    renderer = am.StreamRenderer(ir.Request(model="m"))
    assert frames(renderer.ping()) == [("ping", {"type": "ping"})]


def test_the_recorded_claude_stream_renders_back_to_the_same_blocks() -> None:
    upstream = fixture_bytes("stream_thinking_tools.sse")
    again = rendered(parsed_stream(upstream), ir.Request(model="claude-opus-5"))
    original = frames(upstream)
    assert [b for b in blocks(again)] == [
        {**b, "deltas": [d for d in b["deltas"] if d.get("partial_json") != ""]} for b in blocks(original)
    ]
    assert again[-2][1]["usage"] == original[-2][1]["usage"] | {"input_tokens": 10}


# --- upstream side: the Claude stream ---------------------------------------------------------

RECORDED_EVENTS: list[ir.Event] = [
    ir.Start(
        "msg_01XFDUDYJgAACzvnptvVoYEL",
        "claude-opus-5",
        usage=ir.Usage(input_tokens=115, output_tokens=1, cached_tokens=100, cache_write_tokens=5),
    ),
    ir.ReasoningDelta("The user wants the weather "),
    ir.ReasoningDelta("in two cities; I can ask for both at once."),
    ir.ReasoningDone(
        "EqQBCkgIBxABGAIqQLh0w2p9F8Kq1vYx3ZbN6mT4cR7sD0eA5fG2hJ9kL1nPqW8uX3yZ4bV6cM0aQ2rS5tU7wE9iO1pK3lJ6hG8fD4sA==",
        "claude",
    ),
    ir.ReasoningDone(
        "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB8URj2pLmN3kF7C8aW9",
        "claude",
        redacted=True,
    ),
    ir.TextDelta("I'll check the weather "),
    ir.TextDelta("in both cities."),
    ir.ToolCallStart(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
    ir.ToolCallDelta(0, '{"location": "San Fra'),
    ir.ToolCallDelta(0, 'ncisco, CA", "unit": "celsius"}'),
    ir.ToolCallEnd(0),
    ir.ToolCallStart(1, "toolu_01B2mWqZ9xYvR8sT7uQ6pO5n", "get_weather"),
    ir.ToolCallDelta(1, '{"locat'),
    ir.ToolCallDelta(1, 'ion": "Paris, FR"}'),
    ir.ToolCallEnd(1),
    ir.UsageUpdate(ir.Usage(input_tokens=115, output_tokens=20, cached_tokens=100, cache_write_tokens=5)),
    ir.End(ir.Finish("tool_calls", "tool_use")),
]


@pytest.mark.parametrize("piece", [0, 1, 7, 64, 4096])
def test_the_recorded_claude_stream_becomes_neutral_events_however_it_is_split(piece: int) -> None:
    # C22 (ordinals 0 and 1, R7), C39 (nothing visible from redacted thinking), C40 (signature before the
    # text), C49 (usage 10 + 5 + 100 in, 20 out)
    assert parsed_stream(fixture_bytes("stream_thinking_tools.sse"), piece) == RECORDED_EVENTS


def test_crlf_framing_is_understood() -> None:
    data = fixture_bytes("stream_thinking_tools.sse").replace(b"\n", b"\r\n")
    assert parsed_stream(data, 5) == RECORDED_EVENTS


def test_plain_text_arrives_in_pieces_and_ends_with_stop() -> None:
    events = parsed_stream(fixture_bytes("stream_text.sse"), 3)  # C1, C4, C6
    assert "".join(e.text for e in events if isinstance(e, ir.TextDelta)) == "Hello, world!"
    assert events[-1] == ir.End(ir.Finish("stop", "end_turn"))
    assert events[-2] == ir.UsageUpdate(ir.Usage(input_tokens=12, output_tokens=6))


def test_the_recorded_overloaded_error_becomes_a_529_stream_error() -> None:
    events = parsed_stream(fixture_bytes("stream_overloaded.sse"))  # C55
    assert events[-2:] == [ir.TextDelta("Sure, here"), ir.StreamError(529, "Overloaded", "overloaded_error")]
    stream = rendered(events)
    assert stream[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def test_a_stream_cut_before_message_stop_fails_at_finish() -> None:
    data = fixture_bytes("stream_text.sse")
    events = parsed_stream(data[: data.index(b"event: message_delta")])
    assert isinstance(events[-1], ir.StreamError) and events[-1].status == 502


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("invalid_request_error", 400),
        ("authentication_error", 401),
        ("permission_error", 403),
        ("not_found_error", 404),
        ("request_too_large", 413),
        ("rate_limit_error", 429),  # C52
        ("api_error", 500),
        ("timeout_error", 504),
        ("overloaded_error", 529),
        ("something_new", 500),
    ],
)
def test_error_event_types_become_statuses(kind: str, status: int) -> None:
    data = b'event: error\ndata: {"type":"error","error":{"type":"' + kind.encode() + b'","message":"m"}}\n\n'
    assert parsed_stream(data) == [ir.StreamError(status, "m", kind)]


@pytest.mark.parametrize(
    ("stop_reason", "stop_sequence", "finish"),
    [
        ("end_turn", None, ir.Finish("stop", "end_turn")),
        ("max_tokens", None, ir.Finish("length", "max_tokens")),
        ("tool_use", None, ir.Finish("tool_calls", "tool_use")),
        ("stop_sequence", "END", ir.Finish("stop_sequence", "stop_sequence", "END")),  # C45
        ("refusal", None, ir.Finish("content_filter", "refusal")),
        ("pause_turn", None, ir.Finish("pause_turn", "pause_turn")),
        ("model_context_window_exceeded", None, ir.Finish("length", "model_context_window_exceeded")),
        ("brand_new_reason", None, ir.Finish("other", "brand_new_reason")),
    ],
)
def test_claude_stop_reasons_become_neutral_finishes(
    stop_reason: str, stop_sequence: str | None, finish: ir.Finish
) -> None:
    delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence}}
    data = b"".join(
        anthropic_stream.frame(n.encode(), p)
        for n, p in [
            ("message_delta", {**delta, "usage": {"output_tokens": 1}}),
            ("message_stop", {"type": "message_stop"}),
        ]
    )
    assert parsed_stream(data)[-1] == ir.End(finish)
    body = fixture_json("message_tool_use.json") | {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    assert am.parse_response(body).finish == finish


def test_a_custom_tool_call_is_unwrapped_to_its_raw_input() -> None:
    req = ir.Request(model="claude-opus-5", source="responses", tools=[ir.Tool("apply", kind="custom")])  # C32
    data = b"".join(
        anthropic_stream.frame(n.encode(), p)
        for n, p in [
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "tool_use", "id": "toolu_9", "name": "apply", "input": {}},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": '{"input": "*** Begin'},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": ' Patch"}'},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ]
    )
    parser = am.StreamParser(req)
    assert parser.feed(data) == [
        ir.ToolCallStart(0, "toolu_9", "apply", kind="custom"),
        ir.ToolCallDelta(0, "*** Begin Patch"),
        ir.ToolCallEnd(0),
    ]
    body = {"content": [{"type": "tool_use", "id": "toolu_9", "name": "apply", "input": {"input": "raw"}}]}
    assert am.parse_response(body, req).parts == [ir.ToolCall("toolu_9", "apply", "raw", "custom")]


def test_the_recorded_non_stream_answer_parses() -> None:
    resp = am.parse_response(fixture_json("message_tool_use.json"))  # C21
    thinking, text, call = resp.parts
    assert isinstance(thinking, ir.Reasoning) and thinking.family == "claude" and thinking.signature.startswith("EqQB")
    assert text == ir.Text("I'll look that up.")
    assert call == ir.ToolCall(
        "toolu_01A09q90qw90lq917835lq9", "get_weather", '{"location":"San Francisco, CA","unit":"celsius"}'
    )
    assert resp.finish == ir.Finish("tool_calls", "tool_use")
    assert resp.usage == ir.Usage(input_tokens=3895, output_tokens=503, cached_tokens=1800)
    assert am.error_message({"type": "error", "error": {"type": "x", "message": "bad"}}) == "bad"


def test_stream_and_non_stream_answers_aggregate_to_the_same_response() -> None:
    aggregator = ir.Aggregator()
    aggregator.feed(parsed_stream(fixture_bytes("stream_thinking_tools.sse")))
    streamed = aggregator.response
    body = {
        "id": streamed.id,
        "model": streamed.model,
        "content": am.render_response(streamed, ir.Request(model="m"))["content"],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 100,
            "output_tokens": 20,
        },
    }
    direct = am.parse_response(body)
    streamed.parts = [
        ir.ToolCall(p.id, p.name, orjson.dumps(orjson.loads(p.arguments)).decode()) if isinstance(p, ir.ToolCall) else p
        for p in streamed.parts
    ]
    assert direct == streamed


def test_pings_unknown_events_and_comments_are_ignored() -> None:
    data = b': keep-alive\n\nevent: ping\ndata: {"type": "ping"}\n\nevent: future\ndata: {"type":"future"}\n\n'
    parser = am.StreamParser()
    assert parser.feed(data) == []


# --- upstream side: requests for Claude -------------------------------------------------------


def test_system_and_developer_text_from_other_dialects_become_top_level_blocks() -> None:
    req = ir_request(  # C9, C11, §6 #3
        user(ir.Text("one")),
        user(ir.Text("two")),
        assistant(ir.Text("answer")),
        user(ir.Text("three")),
        system=[
            ir.SystemSegment([ir.Text("be nice", {"type": "ephemeral"})]),
            ir.SystemSegment([ir.Text("developer note")], position=0, role_hint="developer"),
        ],
    )
    body = am.render_request(req)
    assert body["system"] == [
        {"type": "text", "text": "be nice", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "developer note"},
    ]
    assert [(m["role"], [b["text"] for b in m["content"]]) for m in body["messages"]] == [
        ("user", ["one", "two"]),
        ("assistant", ["answer"]),
        ("user", ["three"]),
    ]


@pytest.mark.parametrize(
    ("model", "in_place"),
    [
        ("claude-opus-5", True),
        ("claude-sonnet-5", True),
        ("claude-sonnet-4-5", False),
        ("claude-sonnet-4-5-20250929", False),
    ],
)
def test_in_conversation_system_text_stays_in_place_or_folds_for_legacy_models(model: str, in_place: bool) -> None:
    req = am.parse_request(CLAUDE_CODE, HEADER_BETAS)  # C15, D3.3
    req.model = model
    body = am.render_request(req)
    roles = [m["role"] for m in body["messages"]]
    mid = CLAUDE_CODE["messages"][3]["content"][0]
    if in_place:
        assert roles == ["user", "assistant", "user", "system"] and body["messages"][3]["content"] == [mid]
        assert body["system"] == CLAUDE_CODE["system"]
    else:
        assert "system" not in roles
        assert body["system"] == [*CLAUDE_CODE["system"], mid]
    assert am.upstream_betas(req) == req.betas


def test_a_claude_code_request_survives_the_ir_for_a_claude_upstream() -> None:
    body = am.render_request(am.parse_request(CLAUDE_CODE, HEADER_BETAS))
    original = CLAUDE_CODE
    assert body["system"] == original["system"]  # attribution back in its place
    assert body["messages"][1] == original["messages"][1]
    assert body["tools"] == original["tools"]  # schemas, cache_control and Claude-only tool fields
    for key in ("model", "max_tokens", "metadata", "thinking", "output_config", "context_management", "stream"):
        assert body[key] == original[key], key
    assert "betas" not in body


def test_in_conversation_segments_from_other_dialects_go_to_the_top_level_system() -> None:
    req = ir_request(user(ir.Text("a")), system=[ir.SystemSegment([ir.Text("mid")], position=1)])
    body = am.render_request(req)
    assert body["system"] == [{"type": "text", "text": "mid"}] and [m["role"] for m in body["messages"]] == ["user"]


def test_images_become_base64_or_url_sources() -> None:
    req = ir_request(  # C17
        user(
            ir.Image(url="data:image/jpeg;base64,/9j/4AAQ"),
            ir.Image(url="https://example.com/a.png"),
            ir.Image(data="iVBOR", media_type="image/png"),
            ir.File(url="data:application/pdf;base64,JVBERi0=", filename="a.pdf"),
            ir.File(data="aGVsbG8=", media_type="text/plain"),
            ir.Audio("UklGR"),
        )
    )
    assert am.render_request(req)["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            "title": "a.pdf",
        },
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}},
    ]


def test_a_function_tool_gets_an_object_schema_and_required_becomes_any() -> None:
    tool = ir.Tool("get_weather", "Weather", {"properties": {"city": {"type": "string"}}}, strict=True)
    body = am.render_request(ir_request(user(ir.Text("hi")), tools=[tool], tool_choice=ir.ToolChoice("required")))
    assert body["tools"] == [  # C21; strict from another dialect is not Claude's strict
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert body["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (None, {"type": "object", "properties": {}}),
        ({"type": "object"}, {"type": "object", "properties": {}}),
        (
            {"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"type": "null"}]},
            {"type": "object", "properties": {"a": {"type": "string"}}},
        ),
        (
            {
                "allOf": [
                    {"type": "object", "properties": {"a": {}}, "required": ["a"]},
                    {"properties": {"b": {}}, "required": ["b"]},
                ]
            },
            {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a", "b"]},
        ),
        (
            {"oneOf": [{"properties": {"x": {}}}, {"properties": {"y": {}}}], "description": "d"},
            {"description": "d", "type": "object", "properties": {"x": {}, "y": {}}},
        ),
    ],
)
def test_tool_schemas_are_normalised_for_claude(schema: Any, expected: dict[str, Any]) -> None:
    assert am.normalize_tool_schema(schema) == expected


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (ir.ToolChoice("none"), None, {"type": "none"}),  # C28 (R12), §6 #24
        (ir.ToolChoice("auto"), None, {"type": "auto"}),
        (ir.ToolChoice("tool", "f"), None, {"type": "tool", "name": "f"}),
        (ir.ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_tool_choice_maps_to_claude(choice: ir.ToolChoice | None, parallel: bool | None, expected: Any) -> None:
    req = ir_request(user(ir.Text("x")), tools=[ir.Tool("f")], tool_choice=choice, parallel_tool_calls=parallel)
    assert am.render_request(req).get("tool_choice") == expected


def test_web_search_is_mapped_and_other_foreign_builtins_are_dropped() -> None:
    tools = [ir.Tool("web_search", kind="builtin", builtin={"type": "web_search_preview"})]
    tools += [ir.Tool("image_generation", kind="builtin", builtin={"type": "image_generation"})]
    body = am.render_request(ir_request(user(ir.Text("x")), tools=tools))
    assert body["tools"] == [{"type": "web_search_20250305", "name": "web_search"}]


def test_tool_results_with_images_become_block_arrays() -> None:
    call = ir.ToolCall("call_1", "shot", "{}")
    result = ir.ToolResult("call_1", [ir.Text("here"), ir.Image(url="data:image/png;base64,iVBOR")])
    body = am.render_request(ir_request(user(ir.Text("go")), assistant(call), user(result)))
    assert body["messages"][2]["content"] == [  # C34
        {
            "type": "tool_result",
            "tool_use_id": "call_1",
            "content": [
                {"type": "text", "text": "here"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            ],
        }
    ]


def test_turns_merge_empty_messages_vanish_and_tool_calls_close_the_assistant_turn() -> None:
    req = ir_request(  # §6 #1, #8
        user(ir.Text("q")),
        assistant(ir.ToolCall("c1", "f", '{"a":1}')),
        assistant(),
        assistant(ir.Text("let me check")),
        user(ir.Text("and also"), ir.ToolResult("c1", [ir.Text("42")], is_error=True)),
        user(),
    )
    messages = am.render_request(req)["messages"]
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "let me check"},
                {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "42", "is_error": True},
                {"type": "text", "text": "and also"},
            ],
        },
    ]


def test_a_system_only_request_gets_an_empty_user_turn() -> None:
    req = ir_request(system=[ir.SystemSegment([ir.Text("only system")])])  # §6 #2
    assert am.render_request(req)["messages"] == [{"role": "user", "content": [{"type": "text", "text": ""}]}]


def test_duplicate_tool_results_send_the_last_one_once_where_the_first_was() -> None:
    req = ir_request(  # §6 #13
        assistant(ir.ToolCall("c1", "f", "{}")),
        user(ir.ToolResult("c1", [ir.Text("old")])),
        user(ir.ToolResult("c1", [ir.Text("new")]), ir.Text("next")),
    )
    content = am.render_request(req)["messages"][1]["content"]
    assert content == [{"type": "tool_result", "tool_use_id": "c1", "content": "new"}, {"type": "text", "text": "next"}]


def test_tool_ids_are_sanitised_the_same_way_on_both_sides() -> None:
    req = ir_request(assistant(ir.ToolCall("call:1/x", "f", "{}")), user(ir.ToolResult("call:1/x", [ir.Text("ok")])))
    messages = am.render_request(req)["messages"]  # §6 #15
    assert messages[0]["content"][0]["id"] == messages[1]["content"][0]["tool_use_id"] == "call_1_x"
    assert am.claude_tool_id("").startswith("toolu_")


@pytest.mark.parametrize(
    ("call", "sent_input"),
    [
        (ir.ToolCall("c", "f", "{'a': 1}"), {}),  # §6 #17
        (ir.ToolCall("c", "f", ""), {}),
        (ir.ToolCall("c", "f", "[1, 2]"), {}),
        (ir.ToolCall("c", "apply", "*** raw patch", kind="custom"), {"input": "*** raw patch"}),
    ],
)
def test_tool_call_arguments_become_an_input_object(call: ir.ToolCall, sent_input: dict[str, Any]) -> None:
    assert am.render_request(ir_request(assistant(call)))["messages"][0]["content"][0]["input"] == sent_input


def test_custom_tools_are_declared_as_a_function_taking_a_string_input() -> None:
    body = am.render_request(ir_request(user(ir.Text("x")), tools=[ir.Tool("apply", "patch", kind="custom")]))
    assert body["tools"][0]["input_schema"] == {  # C32
        "type": "object",
        "properties": {"input": {"type": "string"}},
        "required": ["input"],
    }


def test_only_claude_signed_reasoning_is_replayed() -> None:
    req = ir_request(  # §6 #48, §4.9.7
        user(ir.Reasoning("user side", "EqQB", "claude"), ir.Text("q")),
        assistant(
            ir.Reasoning("mine", "EqQBsig", "claude"),
            ir.Reasoning(signature="EmwK", family="claude", redacted=True),
            ir.Reasoning("codex", "gAAAAAB", "responses"),
            ir.Reasoning("unsigned"),
            ir.Text("a"),
        ),
    )
    messages = am.render_request(req)["messages"]
    assert messages[0]["content"] == [{"type": "text", "text": "q"}]
    assert messages[1]["content"] == [
        {"type": "thinking", "thinking": "mine", "signature": "EqQBsig"},
        {"type": "redacted_thinking", "data": "EmwK"},
        {"type": "text", "text": "a"},
    ]


def test_stop_sequences_metadata_and_the_default_max_tokens_are_written() -> None:
    body = am.render_request(ir_request(user(ir.Text("x")), stop=["END"], user="u-1"))  # C45, §6 #43
    assert (body["stop_sequences"], body["metadata"], body["max_tokens"]) == (["END"], {"user_id": "u-1"}, 32000)
    assert "stream" not in body and am.render_request(ir_request(user(ir.Text("x")), stream=True))["stream"] is True


@pytest.mark.parametrize(
    ("model", "thinking", "max_tokens", "expected", "effort", "sent_max"),
    [
        # C36: OpenAI reasoning_effort "high" with temperature 0.7
        (
            "claude-sonnet-4-6",
            ir.Thinking(mode="level", level="high", include_thoughts=True),
            None,
            {"type": "adaptive"},
            "high",
            32000,
        ),
        (
            "claude-sonnet-4-5",
            ir.Thinking(mode="level", level="high", include_thoughts=True),
            None,
            {"type": "enabled", "budget_tokens": 24576},
            None,
            32000,
        ),
        ("claude-opus-5", ir.Thinking(mode="level", level="minimal"), None, {"type": "adaptive"}, "low", 32000),
        ("claude-opus-4-6", ir.Thinking(mode="level", level="xhigh"), None, {"type": "adaptive"}, "max", 32000),
        ("claude-opus-5", ir.Thinking(mode="auto", budget=-1), None, {"type": "adaptive"}, None, 32000),
        ("claude-opus-5", ir.Thinking(mode="none", budget=0), None, {"type": "disabled"}, None, 32000),
        (
            "claude-sonnet-4-5",
            ir.Thinking(mode="budget", budget=8192),
            4096,
            {"type": "enabled", "budget_tokens": 4095},
            None,
            4096,
        ),
        (
            "claude-sonnet-4-5",
            ir.Thinking(mode="budget", budget=8192),
            500,
            {"type": "enabled", "budget_tokens": 1024},
            None,
            1025,
        ),
        (
            "claude-opus-5",
            ir.Thinking(mode="auto", budget=-1, include_thoughts=False),
            None,
            {"type": "adaptive", "display": "omitted"},
            None,
            32000,
        ),
        (
            "my-claude-proxy",
            ir.Thinking(mode="level", level="medium"),
            None,
            {"type": "enabled", "budget_tokens": 8192},
            None,
            32000,
        ),
        ("claude-opus-5", ir.Thinking(include_thoughts=True), None, {"type": "adaptive"}, None, 32000),
    ],
)
def test_the_thinking_writer_fits_each_claude_model(
    model: str,
    thinking: ir.Thinking,
    max_tokens: int | None,
    expected: dict[str, Any],
    effort: str | None,
    sent_max: int,
) -> None:
    req = ir_request(user(ir.Text("x")), model=model, thinking=thinking, max_tokens=max_tokens, temperature=0.7)
    body = am.render_request(req)
    assert body["thinking"] == expected
    assert body.get("output_config", {}).get("effort") == effort
    assert body["max_tokens"] == sent_max
    assert "temperature" not in body  # R16


def test_a_claude_clients_display_choice_is_kept() -> None:
    req = am.parse_request(claude_body(thinking={"type": "adaptive", "display": "summarized"}))
    assert am.render_request(req)["thinking"] == {"type": "adaptive", "display": "summarized"}


@pytest.mark.parametrize(
    "fields",
    [
        {"thinking": {"type": "adaptive"}, "output_config": {"effort": "minimal"}},  # not a level of claude-opus-5
        {"model": "claude-sonnet-4-5", "thinking": {"type": "enabled", "budget_tokens": 500}},
    ],
)
def test_a_thinking_setting_a_claude_model_cannot_honour_is_refused_for_claude_clients(fields: dict[str, Any]) -> None:
    with pytest.raises(ThinkingError):  # §6 #50
        am.render_request(am.parse_request(claude_body(**fields)))


def test_thinking_is_left_out_when_a_tool_is_forced_or_the_open_tool_turn_has_no_thinking() -> None:
    thinking = ir.Thinking(mode="level", level="high")
    forced = ir_request(
        user(ir.Text("x")), tools=[ir.Tool("f")], tool_choice=ir.ToolChoice("tool", "f"), thinking=thinking
    )
    assert "thinking" not in am.render_request(forced)
    loop = ir_request(
        user(ir.Text("x")),
        assistant(ir.ToolCall("c", "f", "{}")),
        user(ir.ToolResult("c", [ir.Text("r")])),
        thinking=thinking,
    )
    body = am.render_request(loop)
    assert "thinking" not in body and "output_config" not in body
    loop.messages[1].parts.insert(0, ir.Reasoning("t", "EqQB", "claude"))
    assert am.render_request(loop)["thinking"] == {"type": "adaptive"}


@pytest.mark.parametrize(
    ("source", "thinking", "sampling", "sent"),
    [
        ("openai", None, {"temperature": 0.7, "top_p": 0.9, "top_k": 5}, {}),  # R16, §6 #44
        ("claude", None, {"temperature": 0.7, "top_p": 0.9, "top_k": 5}, {"temperature": 0.7, "top_k": 5}),
        (
            "claude",
            ir.Thinking(mode="auto", budget=-1),
            {"temperature": 0.7, "top_p": 0.96, "top_k": 5},
            {"top_p": 0.96},
        ),
        ("claude", ir.Thinking(mode="auto", budget=-1), {"temperature": 1, "top_p": 0.5}, {"temperature": 1}),
        ("claude", ir.Thinking(mode="none", budget=0), {"top_p": 0.5}, {"top_p": 0.5}),
    ],
)
def test_sampling_follows_r16(
    source: ir.Family, thinking: ir.Thinking | None, sampling: dict[str, Any], sent: dict[str, Any]
) -> None:
    req = ir_request(user(ir.Text("x")), source=source, thinking=thinking, **sampling)
    body = am.render_request(req)
    assert {k: body[k] for k in ("temperature", "top_p", "top_k") if k in body} == sent


def test_fast_service_and_upstream_betas() -> None:
    req = ir_request(user(ir.Text("x")), service_tier="priority", betas=["a", "a", "b"])
    assert am.render_request(req)["speed"] == "fast"
    assert am.upstream_betas(req) == ["a", "b", am.FAST_MODE_BETA]
    assert am.render_request(ir_request(user(ir.Text("x")), service_tier="flex")).get("service_tier") is None


# --- Claude client -> Claude upstream: the near pass-through ----------------------------------


def test_same_dialect_bodies_only_change_what_must_change() -> None:
    body = copy.deepcopy(CLAUDE_CODE) | {"x_future_field": {"keep": True}}  # C7, D1.4, D3.5
    before = copy.deepcopy(body)
    sent, betas = am.sanitize_passthrough(body, "claude-opus-5-20260901", HEADER_BETAS)
    assert body == before  # the client's body is not modified
    assert sent == {k: v for k, v in before.items() if k != "betas"} | {"model": "claude-opus-5-20260901"}
    assert betas == [*HEADER_BETAS, "fallback-credit-2026-06-01"]


def test_passthrough_folds_in_conversation_system_turns_only_for_legacy_models() -> None:
    sent, _ = am.sanitize_passthrough(CLAUDE_CODE, "claude-opus-5")  # C15
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user", "system"]
    sent, _ = am.sanitize_passthrough(CLAUDE_CODE, "claude-sonnet-4-5")
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["system"] == [*CLAUDE_CODE["system"], *CLAUDE_CODE["messages"][3]["content"]]
    sent, _ = am.sanitize_passthrough(
        claude_body(system="top", messages=[{"role": "system", "content": "mid"}]), "claude-opus-4-6"
    )
    assert sent["system"] == [{"type": "text", "text": "top"}, {"type": "text", "text": "mid"}]


def test_passthrough_adds_the_fast_mode_beta_once() -> None:
    _, betas = am.sanitize_passthrough(claude_body(speed="fast", betas="x, y"), "claude-opus-5", ["y"])
    assert betas == ["y", "x", am.FAST_MODE_BETA]


def _cached(text: str, ttl: str | None = None) -> dict[str, Any]:
    control = {"type": "ephemeral"} | ({"ttl": ttl} if ttl else {})
    return {"type": "text", "text": text, "cache_control": control}


def _breakpoints(body: dict[str, Any]) -> list[str]:
    marks = [t["name"] for t in body.get("tools", []) if "cache_control" in t]
    marks += [b["text"] for b in body["system"] if "cache_control" in b]
    for message in body["messages"]:
        for block in message["content"]:
            if "cache_control" in block:
                marks.append(block.get("text") or block["tool_use_id"])
            marks += [b["text"] for b in block.get("content", []) if isinstance(b, dict) and "cache_control" in b]
    return marks


def test_cache_breakpoints_are_capped_at_four_keeping_the_most_valuable() -> None:
    body = claude_body(
        tools=[{"name": n, "input_schema": {}, "cache_control": {"type": "ephemeral"}} for n in ("t1", "t2")],
        system=[_cached("s1"), _cached("s2")],
        messages=[
            {"role": "user", "content": [_cached("m1")]},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "r", "content": [_cached("m2")]}, _cached("m3")],
            },
        ],
    )
    before = copy.deepcopy(body)
    sent, _ = am.sanitize_passthrough(body, "claude-opus-5")
    assert body == before
    assert _breakpoints(body) == ["t1", "t2", "s1", "s2", "m1", "m2", "m3"]
    assert _breakpoints(sent) == ["t2", "s2", "m2", "m3"]


def test_a_one_hour_ttl_after_a_five_minute_one_is_shortened() -> None:
    body = claude_body(
        system=[_cached("s1"), _cached("s2", "1h")], messages=[{"role": "user", "content": [_cached("m", "1h")]}]
    )
    sent, _ = am.sanitize_passthrough(body, "claude-opus-5")
    assert [b["cache_control"] for b in sent["system"]] == [{"type": "ephemeral"}, {"type": "ephemeral"}]
    assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    sent, _ = am.sanitize_passthrough(CLAUDE_CODE, "claude-opus-5")
    assert sent["system"] == CLAUDE_CODE["system"]  # 1h before 5m is left alone


@pytest.mark.parametrize(
    ("fields", "kept"),
    [
        ({"temperature": 0.5, "top_p": 0.9, "top_k": 3}, {"temperature": 0.5, "top_k": 3}),
        ({"thinking": {"type": "adaptive"}, "temperature": 0.5, "top_p": 0.99, "top_k": 3}, {"top_p": 0.99}),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}, "temperature": 1, "top_p": 0.5}, {"temperature": 1}),
        ({"thinking": {"type": "disabled"}, "top_p": 0.5}, {"top_p": 0.5}),
    ],
)
def test_passthrough_sampling_follows_the_native_rule(fields: dict[str, Any], kept: dict[str, Any]) -> None:
    sent, _ = am.sanitize_passthrough(claude_body(**fields), "claude-opus-5")  # §1.5
    assert {k: sent[k] for k in ("temperature", "top_p", "top_k") if k in sent} == kept


def test_passthrough_drops_thinking_blocks_no_claude_model_can_replay() -> None:
    turn = [
        {"type": "thinking", "thinking": "from codex", "signature": "gAAAAABx"},
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": "a"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {}},
    ]
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": turn},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]},
    ]
    sent, _ = am.sanitize_passthrough(
        claude_body(messages=messages, thinking={"type": "adaptive"}, output_config={"effort": "high"}), "claude-opus-5"
    )
    assert sent["messages"][1]["content"] == turn[2:]
    assert sent["thinking"] == {"type": "disabled"} and "output_config" not in sent


def test_passthrough_removes_empty_web_search_domain_filters() -> None:
    web = {"type": "web_search_20250305", "name": "web_search", "allowed_domains": [], "max_uses": 2}
    sent, _ = am.sanitize_passthrough(claude_body(tools=[web]), "claude-opus-5")
    assert sent["tools"] == [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]


# --- count_tokens -----------------------------------------------------------------------------


def test_the_count_tokens_body_keeps_only_what_counting_needs() -> None:
    req = am.parse_request(CLAUDE_CODE, HEADER_BETAS)  # C57 (Claude side), §5
    body = am.render_count_tokens(req)
    assert set(body) == {"model", "system", "messages", "tools", "thinking"}
    assert am.count_tokens_response(417) == {"input_tokens": 417}
    assert am.upstream_betas(req, count_tokens=True) == [*req.betas, "token-counting-2024-11-01"]


def test_token_segments_cover_system_messages_tools_and_choice() -> None:
    body = copy.deepcopy(CLAUDE_CODE) | {"tool_choice": {"type": "tool", "name": "Read"}}
    segments = am.token_segments(am.parse_count_tokens_request(body))  # C56, §5
    assert segments[:3] == [CLAUDE_CODE["system"][0]["text"], *(b["text"] for b in CLAUDE_CODE["system"][1:])]
    for expected in (
        "Plan mode is active. The user does not want you to edit files yet.",  # mid-conversation system text
        "user",
        "assistant",
        "The user asks about parse_order. I should read orders.py first.",
        "toolu_01AbCdEf",
        '{"file_path":"/repo/orders.py"}',
        "Reads a file from the local filesystem.",
        orjson.dumps(CLAUDE_CODE["tools"][0]["input_schema"]).decode(),
        "tool",
        "Read",
    ):
        assert expected in segments
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    only_image = am.token_segments(am.parse_request(claude_body(messages=[{"role": "user", "content": [image]}])))
    assert only_image == ["user"]


# --- the module stays pure --------------------------------------------------------------------


@pytest.mark.parametrize("module", [anthropic_messages, anthropic_stream])
def test_the_dialect_modules_import_nothing_that_does_io(module: Any) -> None:
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    } | {str(node.module).split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {
        "__future__",
        "base64",
        "binascii",
        "collections",
        "dataclasses",
        "typing",
        "re",
        "secrets",
        "orjson",
        "gateway",
    }
