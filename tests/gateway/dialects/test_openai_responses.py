"""OpenAI Responses: client requests and answers, Codex bodies and streams, at translation level.

Recorded payloads live in ``tests/fixtures/openai_responses/``; stream output is also replayed
through the ``openai`` SDK's own Responses stream accumulator, the way ``client.responses.stream()``
reads it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import NOT_GIVEN
from openai._models import construct_type_unchecked
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from gateway import ir, thinking
from gateway.dialects import openai_responses as resp
from gateway.dialects import openai_responses_stream

FIXTURES = Path(__file__).parents[2] / "fixtures" / "openai_responses"


def _json(name: str) -> dict[str, Any]:
    return orjson.loads((FIXTURES / name).read_bytes())


def _parse_stream(data: bytes, req: ir.Request | None = None, piece: int = 0) -> list[ir.Event]:
    parser = resp.StreamParser(req)
    size = piece or len(data) or 1
    events = [e for i in range(0, len(data), size) for e in parser.feed(data[i : i + size])]
    return events + parser.finish()


def _fixture_events(name: str, req: ir.Request | None = None) -> list[ir.Event]:
    return _parse_stream((FIXTURES / name).read_bytes(), req)


def _render(events: list[ir.Event], req: ir.Request, **options: Any) -> bytes:
    renderer = resp.StreamRenderer(req, **options)
    return b"".join(renderer.feed(e) for e in events) + renderer.finish()


def _frames(wire: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``event: <type>\\ndata: <json>\\n\\n`` frames, checking the framing on the way."""
    assert wire.endswith(b"\n\n")
    frames = []
    for frame in wire[:-2].split(b"\n\n"):
        event_line, data_line = frame.split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        data = orjson.loads(data_line[6:])
        assert data["type"] == event_line[7:].decode()
        frames.append((data["type"], data))
    return frames


def _sdk_final(wire: bytes, tools: list[dict[str, Any]] | None = None) -> Any:
    """The completed response as the openai SDK's stream accumulator builds it (it raises on bad order)."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=tools or NOT_GIVEN, text_format=NOT_GIVEN)
    for _, data in _frames(wire):
        state.handle_event(construct_type_unchecked(type_=ResponseStreamEvent, value=data))  # type: ignore[arg-type]
    return state._completed_response


def _kinds(events: list[ir.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def _text(events: list[ir.Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ir.TextDelta))


def _aggregate(events: list[ir.Event]) -> ir.Aggregator:
    agg = ir.Aggregator()
    agg.feed(events)
    return agg


# --- client side: requests -----------------------------------------------------------------

CODEX_CLI = _json("request_codex_cli.json")


def _codex_cli() -> ir.Request:
    return resp.parse_request(CODEX_CLI)


Check = tuple[str, Callable[[ir.Request], Any], Any]
CODEX_CLI_CHECKS: list[Check] = [
    ("the source is responses", lambda r: r.source, "responses"),
    ("it streams", lambda r: r.stream, True),
    ("instructions are the first, top-level system text", lambda r: r.system[0].position, None),
    ("instructions text", lambda r: r.system[0].parts[0].text, CODEX_CLI["instructions"]),
    ("the developer item is anchored before the first message", lambda r: r.system[1].position, 0),
    ("the developer item keeps its role", lambda r: r.system[1].role_hint, "developer"),
    (
        "roles alternate",
        lambda r: [m.role for m in r.messages],
        ["user", "assistant", "user", "assistant", "user", "assistant", "user"],
    ),
    ("consecutive user items merge", lambda r: len(r.messages[0].parts), 3),
    (
        "the assistant turn holds reasoning then both calls",
        lambda r: [type(p).__name__ for p in r.messages[1].parts],
        ["Reasoning", "ToolCall", "ToolCall"],
    ),
    ("the reasoning blob is GPT-signed", lambda r: r.messages[1].parts[0].family, "responses"),
    ("the reasoning keeps its summary", lambda r: r.messages[1].parts[0].text, "**Inspecting the repository**"),
    ("results carry the call's name", lambda r: [p.name for p in r.messages[2].parts], ["shell", "read_file"]),
    ("the custom call keeps its raw input", lambda r: r.messages[3].parts[1].arguments[:15], "*** Begin Patch"),
    ("the custom call is custom", lambda r: r.messages[3].parts[1].kind, "custom"),
    ("its output is a custom result", lambda r: r.messages[4].parts[0].kind, "custom"),
    ("a namespaced call gets the flat name", lambda r: r.messages[5].parts[0].name, "mcp__github__search_code"),
    ("the web search history item is dropped", lambda r: r.messages[6].parts[-1].text, "Now run the tests."),
    (
        "tools: top level first, then additional_tools, duplicates dropped",
        lambda r: [t.name for t in r.tools],
        [
            "shell",
            "read_file",
            "apply_patch",
            "mcp__github__search_code",
            "mcp__github__get_issue",
            "web_search_preview",
            "view_image",
        ],
    ),
    ("the top-level shell wins", lambda r: r.tools[0].description, "Runs a shell command and returns its output."),
    ("the custom tool keeps its grammar", lambda r: r.tools[2].format["syntax"], "lark"),
    (
        "built-ins stay in their own shape",
        lambda r: (r.tools[5].kind, r.tools[5].builtin["search_context_size"]),
        ("builtin", "medium"),
    ),
    ("tool choice", lambda r: r.tool_choice, ir.ToolChoice("auto")),
    ("parallel tool calls", lambda r: r.parallel_tool_calls, False),
    (
        "effort high, summary shown",
        lambda r: r.thinking,
        ir.Thinking(mode="level", level="high", include_thoughts=True),
    ),
    ("verbosity rides in extensions", lambda r: r.extensions["responses"]["verbosity"], "low"),
    ("the cache key rides in extensions", lambda r: r.extensions["responses"]["prompt_cache_key"][:8], "019ab7c3"),
    (
        "the namespace map restores names later",
        lambda r: r.extensions["responses"]["namespaces"]["mcp__github__search_code"],
        {"namespace": "mcp__github", "name": "search_code"},
    ),
]


@pytest.mark.parametrize(("what", "get", "expected"), CODEX_CLI_CHECKS, ids=[c[0] for c in CODEX_CLI_CHECKS])
def test_a_codex_cli_request_becomes_one_neutral_request(
    what: str, get: Callable[[ir.Request], Any], expected: Any
) -> None:
    assert get(_codex_cli()) == expected


def test_a_plain_string_input_is_one_user_message() -> None:
    req = resp.parse_request({"model": "gpt-5.4", "input": "Hi there"})
    assert req.messages == [ir.Message("user", [ir.Text("Hi there")])]
    assert req.system == []


def test_instructions_come_first_and_a_developer_item_stays_developer_in_place() -> None:
    """Conformance 10: the parse side of Responses → chat."""
    req = resp.parse_request(_json("request_sdk_multimodal.json"))
    assert req.top_level_system() == [ir.SystemSegment([ir.Text("You are a careful assistant.")])]
    assert req.system[1] == ir.SystemSegment([ir.Text("Answer in French.")], position=0, role_hint="developer")


def test_image_detail_and_a_pdf_file_reach_the_ir_unchanged() -> None:
    """Conformance 20: the chat side normalises ``original`` → ``high``; the IR keeps what was sent."""
    parts = resp.parse_request(_json("request_sdk_multimodal.json")).messages[0].parts
    image, pdf = parts[1], parts[2]
    assert isinstance(image, ir.Image) and (image.media_type, image.detail) == ("image/png", "original")
    assert image.data.startswith("iVBORw0KGgo")
    assert pdf == ir.File(data="JVBERi0xLjQKJcOkw7zDtsOfCg==", media_type="application/pdf", filename="report.pdf")


def test_a_stringified_tool_output_with_an_image_becomes_real_parts() -> None:
    """Conformance 35, §6 item 27."""
    req = resp.parse_request(_json("request_sdk_multimodal.json"))
    result = req.messages[-1].parts[0]
    assert isinstance(result, ir.ToolResult) and result.name == "screenshot"
    assert result.content == [ir.Text("captured"), ir.Image(data="/9j/4AAQSkZJRgABAQ==", media_type="image/jpeg")]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("plain text", [ir.Text("plain text")]),
        ('[{"type":"input_text","text":"only text"}]', [ir.Text('[{"type":"input_text","text":"only text"}]')]),
        ('[not json "image"', [ir.Text('[not json "image"')]),
        (
            [{"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "https://x.test/i.png"}],
            [ir.Text("a"), ir.Image(url="https://x.test/i.png")],
        ),
        ({"ok": True}, [ir.Text('{"ok":true}')]),
    ],
)
def test_tool_outputs_keep_their_text_and_expand_only_real_part_arrays(output: Any, expected: list[Any]) -> None:
    body = {
        "model": "m",
        "input": [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": output},
        ],
    }
    assert resp.parse_request(body).messages[1].parts[0].content == expected


def test_consecutive_function_calls_join_the_preceding_assistant_turn() -> None:
    """§6 item 11; a system item in between starts a new turn so its position stays true."""
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "go"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
            {"role": "system", "content": "be brief"},
            {"type": "function_call", "call_id": "c", "name": "h", "arguments": "{}"},
        ],
    }
    req = resp.parse_request(body)
    assert [len(m.parts) for m in req.messages] == [1, 3, 1]
    assert req.system == [ir.SystemSegment([ir.Text("be brief")], position=2, role_hint="system")]


@pytest.mark.parametrize(
    ("blob", "expected"),
    [
        ("gAAAAABpfernet==", ir.Reasoning("t", "gAAAAABpfernet==", "responses")),
        ("EqQBCkgIBxABGAIiQClaude==", ir.Reasoning("t", "EqQBCkgIBxABGAIiQClaude==", "claude")),
        ("claude-redacted-thinking:opaque", ir.Reasoning("t", "opaque", "claude", redacted=True)),
        ("claude#EqQBCk==", ir.Reasoning("t", "EqQBCk==", "claude")),
        (
            "cpa-gemini-responses-carrier-v1:next:function:Zm9v",
            ir.Reasoning("t", "cpa-gemini-responses-carrier-v1:next:function:Zm9v", "gemini"),
        ),
        ("zzz-unknown", ir.Reasoning("t", "zzz-unknown", None)),
    ],
)
def test_replayed_reasoning_keeps_its_blob_and_its_family_by_shape(blob: str, expected: ir.Reasoning) -> None:
    """§4.9.7: the family decides where the blob may be replayed."""
    item = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}], "encrypted_content": blob}
    assert resp.parse_request({"model": "m", "input": [item]}).messages[0].parts == [expected]


@pytest.mark.parametrize(
    ("reasoning", "expected"),
    [
        ({"effort": "high"}, ir.Thinking(mode="level", level="high")),
        ({"effort": "none"}, ir.Thinking(mode="none", budget=0)),
        ({"effort": "minimal", "summary": "auto"}, ir.Thinking(mode="level", level="minimal", include_thoughts=True)),
        ({"summary": "concise"}, ir.Thinking(include_thoughts=True)),
        ({"effort": "low", "summary": None}, ir.Thinking(mode="level", level="low", include_thoughts=False)),
        ({"effort": "low", "summary": "none"}, ir.Thinking(mode="level", level="low", include_thoughts=False)),
        ({}, None),
    ],
)
def test_reasoning_effort_and_summary_become_thinking(reasoning: dict[str, Any], expected: ir.Thinking | None) -> None:
    """§4.9.2 and §4.9.6."""
    assert resp.parse_request({"model": "m", "input": "x", "reasoning": reasoning}).thinking == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ({"format": {"type": "json_object"}}, ir.ResponseFormat("json_object")),
        (
            {"format": {"type": "json_schema", "name": "x", "strict": True, "schema": {"type": "object"}}},
            ir.ResponseFormat("json_schema", "x", {"type": "object"}, True),
        ),
        ({"format": {"type": "text"}, "verbosity": "high"}, ir.ResponseFormat("text")),
    ],
)
def test_text_format_becomes_the_response_format(text: dict[str, Any], expected: ir.ResponseFormat) -> None:
    """Conformance 43, the Responses side."""
    assert resp.parse_request({"model": "m", "input": "x", "text": text}).response_format == expected


def test_fields_the_ir_does_not_model_ride_in_extensions_and_limits_in_the_ir() -> None:
    req = resp.parse_request(_json("request_sdk_multimodal.json"))
    ext = req.extensions["responses"]
    assert (req.max_tokens, req.temperature, req.top_p) == (800, 0.2, 0.9)
    assert (req.user, req.service_tier) == ("alice@example.com", "flex")
    assert ext["metadata"] == {"ticket": "T-1"}
    assert ext["echo"]["max_output_tokens"] == 800


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "JSON object"),
        ({"input": "x"}, "'model' is required"),
        ({"model": "m"}, "'input' is required"),
        ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "does not store responses"),
        ({"model": "m", "input": "x", "stream": "yes"}, "'stream' must be a boolean"),
        ({"model": "m", "input": 3}, "'input' must be a string or an array"),
        ({"model": "m", "input": ["x"]}, r"input\[0\] must be an object"),
        ({"model": "m", "input": [{"type": "telepathy"}]}, "unsupported type 'telepathy'"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "stored responses"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "'call_id' is required"),
        ({"model": "m", "input": [{"type": "function_call", "call_id": "c"}]}, "'name' is required"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "unsupported role 'tool'"),
        (
            {"model": "m", "input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "may only contain text",
        ),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "hologram"}]}]}, "unsupported content part"),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "'tool_choice' must be"),
        ({"model": "m", "input": "x", "max_output_tokens": "10"}, "'max_output_tokens' must be an integer"),
        ({"model": "m", "input": "x", "temperature": "hot"}, "'temperature' must be a number"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "'name' is required"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}, "not supported"),
    ],
)
def test_it_rejects_bad_requests_with_a_clear_reason(body: Any, reason: str) -> None:
    with pytest.raises(resp.BadRequest, match=reason):
        resp.parse_request(body)


# --- client side: non-stream answers -------------------------------------------------------


def _answer(parts: list[ir.Part], finish: ir.Finish | None = None, usage: ir.Usage | None = None) -> ir.Response:
    return ir.Response(
        id="msg_01XyZ",
        model="claude-sonnet-4-5",
        created=1764000000,
        parts=parts,
        finish=finish or ir.Finish("stop", "end_turn"),
        usage=usage or ir.Usage(input_tokens=10, output_tokens=5),
    )


def test_a_complete_answer_renders_as_a_responses_object() -> None:
    req = resp.parse_request({"model": "claude-sonnet-4-5", "input": "hi", "max_output_tokens": 64, "store": False})
    reasoning = ir.Reasoning("thinking it over", "EqQBsig", "claude")
    call = ir.ToolCall("toolu_01A", "f", '{"a":1}')
    body = resp.render_response(_answer([reasoning, ir.Text("Hello "), ir.Text("world"), call]), req)
    assert body["id"] == "resp_msg_01XyZ" and body["object"] == "response" and body["status"] == "completed"
    assert body["incomplete_details"] is None and body["model"] == "claude-sonnet-4-5"
    assert [item["id"] for item in body["output"]] == ["rs_msg_01XyZ_0", "msg_msg_01XyZ_1", "fc_toolu_01A"]
    assert body["output"][0]["encrypted_content"] == "EqQBsig"
    assert body["output"][0]["summary"] == [{"type": "summary_text", "text": "thinking it over"}]
    assert body["output"][1]["content"][0]["text"] == "Hello world"
    assert body["output"][2] == {
        "id": "fc_toolu_01A",
        "type": "function_call",
        "status": "completed",
        "arguments": '{"a":1}',
        "call_id": "toolu_01A",
        "name": "f",
    }
    assert body["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 4},  # estimated from the thinking text (§3.4)
        "total_tokens": 15,
    }
    assert (body["max_output_tokens"], body["store"], body["tool_choice"]) == (64, False, "auto")


@pytest.mark.parametrize(
    ("finish", "status", "reason"),
    [
        (ir.Finish("length", "max_tokens"), "incomplete", "max_output_tokens"),
        (ir.Finish("content_filter", "SAFETY"), "incomplete", "content_filter"),
        (ir.Finish("refusal", "refusal"), "incomplete", "content_filter"),
        (ir.Finish("tool_calls"), "completed", None),
        (ir.Finish("pause_turn"), "completed", None),
        (ir.Finish("stop_sequence", stop_sequence="END"), "completed", None),
    ],
)
def test_a_length_or_filter_stop_renders_as_incomplete(finish: ir.Finish, status: str, reason: str | None) -> None:
    """R10 and the finish table of §4.7."""
    body = resp.render_response(_answer([ir.Text("cut")], finish), resp.parse_request({"model": "m", "input": "x"}))
    assert body["status"] == status
    assert body["incomplete_details"] == ({"reason": reason} if reason else None)
    assert body["output"][0]["status"] == ("incomplete" if reason else "completed")


def test_custom_calls_are_rendered_with_their_input_and_namespaces_restored() -> None:
    """§6 items 20 and 21: a custom tool that went out as a function comes back unwrapped."""
    req = _codex_cli()
    parts: list[ir.Part] = [
        ir.ToolCall("toolu_1", "apply_patch", '{"input":"*** Begin Patch\\n*** End Patch\\n"}'),
        ir.ToolCall("call_2", "apply_patch", "raw input", kind="custom"),
        ir.ToolCall("toolu_3", "mcp__github__search_code", '{"q":"x"}'),
        ir.ToolCall("toolu_4", "mcp__github__get_issue", "{}"),
    ]
    output = resp.render_response(_answer(parts, ir.Finish("tool_calls")), req)["output"]
    assert output[0] == {
        "id": "ctc_toolu_1",
        "type": "custom_tool_call",
        "status": "completed",
        "call_id": "toolu_1",
        "name": "apply_patch",
        "input": "*** Begin Patch\n*** End Patch\n",
    }
    assert output[1]["input"] == "raw input"
    assert (output[2]["name"], output[2]["namespace"]) == ("search_code", "mcp__github")
    assert (output[3]["name"], output[3]["namespace"]) == ("mcp__github__get_issue", "mcp__github")


def test_usage_from_gemini_keeps_thoughts_inside_output_tokens() -> None:
    """Conformance 50, the Responses side: IR usage as the Gemini parse side produces it (R6)."""
    usage = ir.Usage(input_tokens=100, output_tokens=80, cached_tokens=40, reasoning_tokens=50, total_tokens=180)
    body = resp.render_response(_answer([ir.Text("x")], usage=usage), resp.parse_request({"model": "m", "input": "x"}))
    assert body["usage"] == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40},
        "output_tokens": 80,
        "output_tokens_details": {"reasoning_tokens": 50},
        "total_tokens": 180,
    }


# --- client side: streams ------------------------------------------------------------------

PLAIN_REQ = ir.Request(model="claude-sonnet-4-5", source="responses")
SEQUENCE_4 = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_a_plain_text_stream_follows_the_spec_sequence() -> None:
    """Conformance 4 (Claude upstream as IR events)."""
    events: list[ir.Event] = [
        ir.Start("msg_01", "claude-sonnet-4-5", 1764000000, ir.Usage(input_tokens=12)),
        ir.TextDelta("Hel"),
        ir.TextDelta("lo"),
        ir.UsageUpdate(ir.Usage(output_tokens=2)),
        ir.End(ir.Finish("stop", "end_turn")),
    ]
    wire = _render(events, PLAIN_REQ)
    frames = _frames(wire)
    assert [kind for kind, _ in frames] == SEQUENCE_4
    assert [data["sequence_number"] for _, data in frames] == list(range(1, len(frames) + 1))
    assert b"[DONE]" not in wire
    completed = frames[-1][1]["response"]
    assert completed["status"] == "completed" and completed["id"] == frames[0][1]["response"]["id"]
    assert completed["output"][0]["content"][0]["text"] == "Hello"
    assert completed["usage"]["input_tokens"] == 12 and completed["usage"]["output_tokens"] == 2
    assert _sdk_final(wire).output_text == "Hello"


def test_two_calls_from_one_gemini_chunk_render_as_contiguous_function_call_items() -> None:
    """Conformance 25."""
    events: list[ir.Event] = [
        ir.Start("abc", "gemini-2.5-pro"),
        ir.ToolCallStart(0, "call_1", "get_weather"),
        ir.ToolCallDelta(0, '{"city":"Paris"}'),
        ir.ToolCallEnd(0),
        ir.ToolCallStart(1, "call_2", "get_time"),
        ir.ToolCallDelta(1, '{"tz":"CET"}'),
        ir.ToolCallEnd(1),
        ir.End(ir.Finish("tool_calls", "STOP")),
    ]
    frames = _frames(_render(events, PLAIN_REQ))
    added = [d for k, d in frames if k == "response.output_item.added"]
    assert [(d["output_index"], d["item"]["id"], d["item"]["call_id"]) for d in added] == [
        (0, "fc_call_1", "call_1"),
        (1, "fc_call_2", "call_2"),
    ]
    assert [d["item_id"] for k, d in frames if k == "response.function_call_arguments.done"] == [
        "fc_call_1",
        "fc_call_2",
    ]
    output = frames[-1][1]["response"]["output"]
    assert frames[-1][0] == "response.completed"
    assert [(o["name"], o["arguments"]) for o in output] == [
        ("get_weather", '{"city":"Paris"}'),
        ("get_time", '{"tz":"CET"}'),
    ]


def _item_spans(frames: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, int]]:
    return [
        (kind.rsplit(".", 1)[1], data["output_index"])
        for kind, data in frames
        if kind in ("response.output_item.added", "response.output_item.done")
    ]


def test_interleaved_codex_calls_render_one_item_at_a_time_with_the_right_arguments() -> None:
    """Conformance 24 on the client side: deltas of two calls never mix, items never overlap."""
    req = resp.parse_request({"model": "gpt-5.4", "input": "x", "tools": CODEX_CLI["tools"][:2]})
    wire = _render(_fixture_events("codex_reasoning_text_two_calls.sse", req), req)
    frames = _frames(wire)
    assert _item_spans(frames) == [
        ("added", 0),
        ("done", 0),
        ("added", 1),
        ("done", 1),
        ("added", 2),
        ("done", 2),
        ("added", 3),
        ("done", 3),
    ]
    for item_id, expected in (
        ("fc_call_Q1wE3rT5yU7iO9pA", '{"command":["ls","-la"],"workdir":"/repo"}'),
        ("fc_call_Z2xC4vB6nM8kL0jH", '{"path":"tests/test_app.py","limit":200}'),
    ):
        deltas = [d["delta"] for k, d in frames if k.endswith("arguments.delta") and d["item_id"] == item_id]
        assert "".join(deltas) == expected
    final = _sdk_final(wire, CODEX_CLI["tools"][:2])
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call", "function_call"]
    assert final.output[0].encrypted_content.startswith("gAAAAABpI3q7")
    assert final.usage.output_tokens_details.reasoning_tokens == 192


def test_claude_thinking_then_text_closes_the_reasoning_before_the_message_opens() -> None:
    """Conformance 40."""
    events: list[ir.Event] = [
        ir.Start("msg_01", "claude-sonnet-4-5", 1, ir.Usage(input_tokens=30)),
        ir.ReasoningDelta("Let me think"),
        ir.ReasoningDelta(" about it."),
        ir.ReasoningDone(signature="EqQBCkgIBxABGAIiQ", family="claude"),
        ir.TextDelta("Answer."),
        ir.UsageUpdate(ir.Usage(output_tokens=40)),
        ir.End(ir.Finish("stop", "end_turn")),
    ]
    frames = _frames(_render(events, PLAIN_REQ))
    kinds = [k for k, _ in frames]
    assert kinds[2:9] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]
    assert frames[2][1]["item"]["type"] == "reasoning" and frames[9][1]["item"]["type"] == "message"
    assert frames[8][1]["item"]["encrypted_content"] == "EqQBCkgIBxABGAIiQ"
    assert frames[8][1]["item"]["summary"] == [{"type": "summary_text", "text": "Let me think about it."}]
    assert frames[-1][1]["response"]["usage"]["output_tokens_details"]["reasoning_tokens"] == 5


def test_redacted_claude_thinking_survives_as_a_prefixed_blob() -> None:
    """§6 item 48: the prefix lets the next request restore a redacted_thinking block."""
    events: list[ir.Event] = [ir.ReasoningDone("opaque==", "claude", redacted=True), ir.End(ir.Finish())]
    item = _frames(_render(events, PLAIN_REQ))[-2][1]["item"]
    assert item == {
        "id": item["id"],
        "type": "reasoning",
        "encrypted_content": "claude-redacted-thinking:opaque==",
        "summary": [],
    }
    replayed = resp.parse_request({"model": "m", "input": [item]}).messages[0].parts[0]
    assert replayed == ir.Reasoning("", "opaque==", "claude", redacted=True)


def test_a_custom_tool_called_through_claude_comes_back_as_a_custom_tool_call() -> None:
    """Conformance 32: the upstream saw a function taking {"input": string}."""
    req = _codex_cli()
    events: list[ir.Event] = [
        ir.Start("msg_01", "claude-sonnet-4-5"),
        ir.ToolCallStart(0, "toolu_01", "apply_patch"),
        ir.ToolCallDelta(0, '{"input": "*** Begin Patch\\n'),
        ir.ToolCallDelta(0, '*** End Patch\\n"}'),
        ir.ToolCallEnd(0),
        ir.End(ir.Finish("tool_calls", "tool_use")),
    ]
    wire = _render(events, req)
    frames = _frames(wire)
    assert [k for k, _ in frames][2:5] == [
        "response.output_item.added",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
    ]
    assert frames[2][1]["item"]["type"] == "custom_tool_call"
    assert frames[3][1]["input"] == frames[4][1]["item"]["input"] == "*** Begin Patch\n*** End Patch\n"
    assert _sdk_final(wire).output[0].input == "*** Begin Patch\n*** End Patch\n"


def test_a_max_tokens_stop_ends_with_response_incomplete() -> None:
    """Conformance 46 (Claude ``max_tokens`` / Gemini ``MAX_TOKENS`` as IR ``length``)."""
    events: list[ir.Event] = [ir.TextDelta("The beginning of"), ir.End(ir.Finish("length", "MAX_TOKENS"))]
    frames = _frames(_render(events, PLAIN_REQ))
    kind, data = frames[-1]
    assert kind == "response.incomplete"
    assert data["response"]["status"] == "incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["response"]["output"][0]["status"] == "incomplete"


@pytest.mark.parametrize(
    ("codex_client", "kind"),
    [(False, "error"), (True, "response.failed")],
)
def test_a_stream_error_never_completes_the_response(codex_client: bool, kind: str) -> None:
    """Conformance 55 on the Responses side; Codex clients get ``response.failed``."""
    events = _fixture_events("codex_error_after_text.sse")
    renderer = resp.StreamRenderer(PLAIN_REQ, codex_client=codex_client)
    wire = b"".join(renderer.feed(e) for e in events)
    assert renderer.finish() == b"" and renderer.feed(ir.TextDelta("late")) == b""
    frames = _frames(wire)
    kinds = [k for k, _ in frames]
    assert "response.completed" not in kinds and kinds[-1] == kind
    last = frames[-1][1]
    assert last["sequence_number"] == len(frames)
    if codex_client:
        assert last["response"]["status"] == "failed"
        assert last["response"]["error"] == {"code": "server_is_overloaded", "message": events[-1].message}
    else:
        assert (last["code"], last["param"]) == ("server_is_overloaded", None)
        assert last["message"].startswith("Our servers are currently overloaded")


def test_a_stream_that_never_ended_is_reported_at_finish() -> None:
    renderer = resp.StreamRenderer(PLAIN_REQ)
    renderer.feed(ir.TextDelta("partial"))
    kind, data = _frames(renderer.finish())[-1]
    assert kind == "error" and data["code"] == "server_error"


def test_text_and_other_calls_arriving_while_a_call_is_open_wait_for_it() -> None:
    events: list[ir.Event] = [
        ir.ToolCallStart(0, "a", "f"),
        ir.ToolCallDelta(0, '{"x":'),
        ir.ToolCallStart(1, "b", "g"),
        ir.TextDelta("meanwhile"),
        ir.ToolCallDelta(1, "{}"),
        ir.ToolCallDelta(0, "1}"),
        ir.ToolCallEnd(1),
        ir.ToolCallEnd(0),
        ir.End(ir.Finish("tool_calls")),
    ]
    wire = _render(events, PLAIN_REQ)
    output = _frames(wire)[-1][1]["response"]["output"]
    assert [(o["type"], o.get("arguments")) for o in output] == [
        ("function_call", '{"x":1}'),
        ("function_call", "{}"),
        ("message", None),
    ]
    assert _item_spans(_frames(wire)) == [
        ("added", 0),
        ("done", 0),
        ("added", 1),
        ("done", 1),
        ("added", 2),
        ("done", 2),
    ]
    assert _sdk_final(wire).output_text == "meanwhile"


def test_a_call_the_upstream_never_closed_is_closed_at_the_end() -> None:
    events: list[ir.Event] = [ir.ToolCallStart(0, "a", "f"), ir.ToolCallDelta(0, "{}"), ir.End(ir.Finish("tool_calls"))]
    output = _frames(_render(events, PLAIN_REQ))[-1][1]["response"]["output"]
    assert output[0]["status"] == "completed" and output[0]["arguments"] == "{}"


def test_empty_deltas_and_an_unsigned_empty_reasoning_block_open_no_items() -> None:
    events: list[ir.Event] = [ir.TextDelta(""), ir.ReasoningDelta(""), ir.ReasoningDone(), ir.End(ir.Finish())]
    assert _frames(_render(events, PLAIN_REQ))[-1][1]["response"]["output"] == []
    body = resp.render_response(_answer([ir.Reasoning(), ir.Text("x")]), PLAIN_REQ)
    assert [o["type"] for o in body["output"]] == ["message"]


def test_an_image_output_becomes_an_image_generation_item() -> None:
    events: list[ir.Event] = [ir.ImageOutput("iVBORw0K", "image/png"), ir.End(ir.Finish())]
    output = _frames(_render(events, PLAIN_REQ))[-1][1]["response"]["output"]
    assert output[0]["type"] == "image_generation_call" and output[0]["result"] == "iVBORw0K"


# --- upstream side: request bodies ---------------------------------------------------------


def test_a_codex_body_gets_the_backend_constants_and_drops_what_it_rejects() -> None:
    """§4.6, providers §7.4, §6 items 44 and 46."""
    req = ir.Request(
        model="gpt-5.4",
        messages=[ir.Message("user", [ir.Text("hi")])],
        system=[ir.SystemSegment([ir.Text("Be terse.")])],
        max_tokens=100,
        temperature=0.3,
        top_p=0.5,
        stop=["END"],
        tools=[ir.Tool("f")],
        source="openai",
    )
    body = resp.render_request(req)
    assert body["instructions"] == ""
    assert body["input"][0] == {
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": "Be terse."}],
    }
    assert body["input"][1] == {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    assert (body["stream"], body["store"], body["include"]) == (True, False, ["reasoning.encrypted_content"])
    assert body["parallel_tool_calls"] is True and body["tool_choice"] == "auto"
    assert body["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert not {"max_output_tokens", "temperature", "top_p", "stop", "user"} & set(body)
    assert body["tools"][0]["strict"] is False  # foreign schemas are not forced into strict mode


def test_the_clients_own_instructions_stay_instructions() -> None:
    body = resp.render_request(_codex_cli())
    assert body["instructions"] == CODEX_CLI["instructions"]
    assert body["input"][0]["role"] == "developer"
    assert body["input"][0]["content"][0]["text"].startswith("<permissions instructions>")


def test_a_mid_conversation_system_message_becomes_a_developer_message_in_place() -> None:
    """Conformance 14 (Claude Code's mid-conversation system turn, as the Claude parse side anchors it)."""
    req = ir.Request(
        model="gpt-5.4",
        system=[
            ir.SystemSegment([ir.Text("x-anthropic-billing-header: cc_version=2.1"), ir.Text("You are Claude Code.")]),
            ir.SystemSegment([ir.Text("The user switched to plan mode.")], position=3),
        ],
        messages=[
            ir.Message("user", [ir.Text("one")]),
            ir.Message("assistant", [ir.Text("two")]),
            ir.Message("user", [ir.Text("three")]),
            ir.Message("assistant", [ir.Text("four")]),
        ],
        source="claude",
    )
    items = resp.render_request(req)["input"]
    assert [(i["role"], i["content"][0]["text"]) for i in items] == [
        ("developer", "You are Claude Code."),
        ("user", "one"),
        ("assistant", "two"),
        ("user", "three"),
        ("developer", "The user switched to plan mode."),
        ("assistant", "four"),
    ]
    assert items[2]["content"][0]["type"] == "output_text"


LONG_MCP = "mcp__enterprise_search_server__search_repository_code_with_semantic_ranking"
LONG_PLAIN = "a" * 70


def _named_request() -> ir.Request:
    tools = [
        ir.Tool("my tool/v2"),
        ir.Tool(LONG_MCP),
        ir.Tool(LONG_PLAIN),
        ir.Tool("a" * 64),
        ir.Tool("apply_patch", kind="custom"),
        ir.Tool("mcp__" + "b" * 70 + "__search_code"),
        ir.Tool("mcp__" + "c" * 70 + "__search_code"),
    ]
    history = ir.Message("assistant", [ir.ToolCall("call_1", LONG_PLAIN, "{}")])
    return ir.Request(model="gpt-5.4", tools=tools, messages=[ir.Message("user", [ir.Text("x")]), history])


def test_long_and_odd_tool_names_are_shortened_for_codex() -> None:
    """Conformance 31 and §4.4.3: valid, ≤ 64, unique, deterministic."""
    body = resp.render_request(_named_request())
    names = [t["name"] for t in body["tools"]]
    assert names == [
        "my_tool_v2",
        "mcp__search_repository_code_with_semantic_ranking",
        "a" * 62 + "_1",
        "a" * 64,
        "apply_patch",
        "mcp__search_code",
        "mcp__search_code_1",
    ]
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", n) for n in names)
    assert body["input"][1]["name"] == "a" * 62 + "_1"
    assert resp.render_request(_named_request()) == body


def test_shortened_names_are_restored_in_streams_and_answers() -> None:
    """Conformance 31, the way back."""
    req = _named_request()
    short = openai_responses_stream.codex_tool_names(req)[LONG_MCP]
    frames = (
        (FIXTURES / "codex_custom_tool_and_long_name.sse")
        .read_bytes()
        .replace(b"mcp__search_repository_code_with_semantic_ranking", short.encode())
    )
    starts = [e for e in _parse_stream(frames, req) if isinstance(e, ir.ToolCallStart)]
    assert [(s.name, s.kind) for s in starts] == [("apply_patch", "custom"), (LONG_MCP, "function")]
    answer = {
        "output": [
            {"type": "function_call", "call_id": "c", "name": "my_tool_v2", "arguments": "{}"},
            {"type": "function_call", "call_id": "d", "name": "mcp__search_code_1", "arguments": "{}"},
        ]
    }
    names = [c.name for c in resp.parse_response(answer, req).tool_calls]
    assert names == ["my tool/v2", "mcp__" + "c" * 70 + "__search_code"]


def test_over_long_call_ids_are_hashed_identically_and_restored() -> None:
    """§6 item 15."""
    long_id = "toolu_" + "x" * 80
    req = ir.Request(
        model="m",
        messages=[
            ir.Message("assistant", [ir.ToolCall(long_id, "f", "{}")]),
            ir.Message("user", [ir.ToolResult(long_id, [ir.Text("ok")])]),
        ],
    )
    call, output = resp.render_request(req)["input"]
    assert call["call_id"] == output["call_id"] and len(call["call_id"]) == 64
    answer = {"output": [{"type": "function_call", "call_id": call["call_id"], "name": "f", "arguments": "{}"}]}
    assert resp.parse_response(answer, req).tool_calls[0].id == long_id


def test_orphan_duplicate_and_ambiguous_tool_outputs_are_dropped_for_codex() -> None:
    """§6 item 14, §4.5."""
    req = ir.Request(
        model="m",
        messages=[
            ir.Message("user", [ir.ToolResult("orphan", [ir.Text("?")])]),
            ir.Message(
                "assistant", [ir.ToolCall("a", "f", "{}"), ir.ToolCall("d", "f", "{}"), ir.ToolCall("d", "g", "{}")]
            ),
            ir.Message(
                "user",
                [
                    ir.ToolResult("a", [ir.Text("1")]),
                    ir.ToolResult("a", [ir.Text("again")]),
                    ir.ToolResult("d", [ir.Text("x")]),
                ],
            ),
        ],
    )
    items = resp.render_request(req)["input"]
    assert [(i["type"], i["call_id"]) for i in items] == [("function_call", "a"), ("function_call_output", "a")]
    assert items[1]["output"] == "1"


def test_an_assistant_turn_with_only_calls_sends_no_empty_message() -> None:
    """§6 item 1."""
    req = ir.Request(model="m", messages=[ir.Message("assistant", [ir.Text(""), ir.ToolCall("a", "f", "")])])
    assert resp.render_request(req)["input"] == [
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"}
    ]


def test_tool_results_with_images_become_output_arrays() -> None:
    """§4.3 and §6 item 26."""
    content: list[ir.Text | ir.Image | ir.File] = [
        ir.Text("see"),
        ir.Image(data="iVBO", media_type="image/png", detail="high"),
        ir.File(data="JVBE", media_type="application/pdf", filename="r.pdf"),
    ]
    req = ir.Request(
        model="m",
        messages=[ir.Message("assistant", [ir.ToolCall("a", "f")]), ir.Message("user", [ir.ToolResult("a", content)])],
    )
    assert resp.render_request(req)["input"][1]["output"] == [
        {"type": "input_text", "text": "see"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "high"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "r.pdf"},
    ]


@pytest.mark.parametrize(
    ("reasoning", "replayed"),
    [
        (ir.Reasoning("gpt summary", "gAAAAABfernet", "responses"), True),
        (ir.Reasoning("", "gAAAAABfernet", None), True),
        (ir.Reasoning("claude thinking", "EqQBCk", "claude"), False),
        (ir.Reasoning("gemini thought", "CiQBsig", "gemini"), False),
        (ir.Reasoning("chat reasoning_content"), False),
        (ir.Reasoning("", "opaque", "claude", redacted=True), False),
    ],
)
def test_only_gpt_signed_reasoning_is_replayed_to_codex(reasoning: ir.Reasoning, replayed: bool) -> None:
    """§4.9.7 and §6 item 48."""
    req = ir.Request(model="gpt-5.4", messages=[ir.Message("assistant", [reasoning, ir.Text("answer")])])
    items = resp.render_request(req)["input"]
    if replayed:
        summary = [{"type": "summary_text", "text": reasoning.text}] if reasoning.text else []
        assert items[0] == {"type": "reasoning", "summary": summary, "encrypted_content": reasoning.signature}
    else:
        assert [i["type"] for i in items] == ["message"]


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        (
            ir.ResponseFormat("json_schema", "x", {"type": "object", "properties": {}}, True),
            {"type": "json_schema", "name": "x", "schema": {"type": "object", "properties": {}}, "strict": True},
        ),
        (ir.ResponseFormat("json_object"), {"type": "json_object"}),
    ],
)
def test_a_response_format_becomes_text_format(response_format: ir.ResponseFormat, expected: dict[str, Any]) -> None:
    """Conformance 43, the Codex side."""
    body = resp.render_request(ir.Request(model="gpt-5.4", response_format=response_format))
    assert body["text"] == {"format": expected}


@pytest.mark.parametrize(
    ("model", "effort"),
    [
        ("gpt-5.5(xhigh)", "xhigh"),
        ("gpt-5.4(8192)", "medium"),
        ("gpt-5.4(64000)", "xhigh"),
        ("gpt-5.4(none)", "low"),
        ("gpt-5.4(auto)", "medium"),
    ],
)
def test_suffixed_models_become_reasoning_effort(model: str, effort: str) -> None:
    """Conformance 38 and §4.9.4–4.9.5 through ``gateway.thinking``."""
    base, wanted = thinking.parse_suffix(model)
    resolved = thinking.resolve(wanted, base, same_family=False, from_suffix=True)
    body = resp.render_request(ir.Request(model=base, thinking=resolved, source="openai"))
    assert (body["model"], body["reasoning"]["effort"]) == (base, effort)


def test_an_unsupported_level_in_family_is_a_400() -> None:
    """Conformance 38: ``gpt-5.4(max)`` from a chat client."""
    base, wanted = thinking.parse_suffix("gpt-5.4(max)")
    with pytest.raises(thinking.ThinkingError, match="not supported"):
        thinking.resolve(wanted, base, same_family=True, from_suffix=True)


@pytest.mark.parametrize(
    ("thinking_in", "reasoning"),
    [
        (ir.Thinking(mode="none", budget=0), {"effort": "none"}),
        (ir.Thinking(mode="budget", budget=1024, include_thoughts=False), {"effort": "low"}),
        (ir.Thinking(mode="level", level="high", include_thoughts=True), {"effort": "high", "summary": "auto"}),
    ],
)
def test_thinking_modes_become_reasoning(thinking_in: ir.Thinking, reasoning: dict[str, str]) -> None:
    assert resp.render_request(ir.Request(model="gpt-5.4", thinking=thinking_in))["reasoning"] == reasoning


def test_tool_choice_and_built_in_tools_take_the_codex_shape() -> None:
    """§4.4.5 and §6 item 46 (``web_search_preview`` → ``web_search``)."""
    req = _codex_cli()
    req.tool_choice = ir.ToolChoice("tool", "apply_patch")
    body = resp.render_request(req)
    assert body["tool_choice"] == {"type": "custom", "name": "apply_patch"}
    assert body["tools"][-2] == {"type": "web_search", "search_context_size": "medium"}
    assert body["tools"][2]["format"]["type"] == "grammar"
    assert "strict" not in body["tools"][5]  # a Responses client's own default stays
    claude = ir.Request(
        model="gpt-5.4",
        tools=[
            ir.Tool(
                "web_search",
                kind="builtin",
                builtin={"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["python.org"]},
            )
        ],
        tool_choice=ir.ToolChoice("tool", "web_search"),
        parallel_tool_calls=False,
        source="claude",
    )
    body = resp.render_request(claude)
    assert body["tools"] == [{"type": "web_search", "filters": {"allowed_domains": ["python.org"]}}]
    assert body["tool_choice"] == {"type": "web_search"}
    assert body["parallel_tool_calls"] is False  # Claude's disable_parallel_tool_use (§4.4.5)


def test_a_codex_cli_request_survives_the_round_trip_to_codex() -> None:
    body = resp.render_request(_codex_cli())
    kinds = [(i["type"], i.get("role")) for i in body["input"]]
    assert kinds == [
        ("message", "developer"),
        ("message", "user"),
        ("reasoning", None),
        ("function_call", None),
        ("function_call", None),
        ("function_call_output", None),
        ("function_call_output", None),
        ("message", "assistant"),
        ("custom_tool_call", None),
        ("custom_tool_call_output", None),
        ("function_call", None),
        ("function_call_output", None),
        ("message", "user"),
    ]
    assert body["input"][8]["input"] == CODEX_CLI["input"][9]["input"]
    assert body["input"][10]["name"] == "mcp__github__search_code"
    assert body["reasoning"] == {"effort": "high", "summary": "detailed"}
    assert body["text"] == {"verbosity": "low"}
    assert body["parallel_tool_calls"] is True  # forced for Codex (§4.6)
    assert body["prompt_cache_key"] == CODEX_CLI["prompt_cache_key"]


def test_the_openai_api_target_keeps_limits_and_sampling_when_the_model_accepts_them() -> None:
    req = resp.parse_request(_json("request_sdk_multimodal.json"))
    body = resp.render_request(req, codex=False, accepts_sampling=True)
    assert (body["max_output_tokens"], body["temperature"], body["top_p"]) == (800, 0.2, 0.9)
    assert (body["stream"], body["store"], body["user"], body["metadata"]) == (
        False,
        False,
        "alice@example.com",
        {"ticket": "T-1"},
    )
    assert body["service_tier"] == "flex" and "reasoning" not in body
    assert body["input"][1]["content"][1]["detail"] == "original"
    assert body["input"][1]["content"][2] == {
        "type": "input_file",
        "file_data": "data:application/pdf;base64,JVBERi0xLjQKJcOkw7zDtsOfCg==",
        "filename": "report.pdf",
    }
    assert "temperature" not in resp.render_request(req, codex=False)


# --- upstream side: streams and answers ----------------------------------------------------

STREAM_CASES = [
    # fixture, event kinds (Start … End), text, finish reason, usage (in, out, cached, reasoning) or error status
    ("codex_plain_text.sse", "Hello! How can I help you today?", "stop", (11, 9, 0, 0)),
    (
        "codex_reasoning_text_two_calls.sse",
        "Let me look at the project layout and the failing test.",
        "tool_calls",
        (5234, 312, 4096, 192),
    ),
    ("codex_custom_tool_and_long_name.sse", "", "tool_calls", (900, 80, 0, 0)),
    (
        "codex_incomplete_max_output_tokens.sse",
        "Here is the beginning of a very long essay that",
        "length",
        (20, 16, 0, 0),
    ),
    ("codex_message_only_in_item_done.sse", "Done: all 14 tests pass.", "stop", (40, 9, 0, 0)),
    ("codex_error_after_text.sse", "The quick brown fox jumps", 529, None),
    ("codex_failed_rate_limit.sse", "Partial", 429, None),
    ("codex_cut_after_text.sse", "The quick brown fox jumps", 502, None),
]


@pytest.mark.parametrize(("fixture", "text", "outcome", "usage"), STREAM_CASES, ids=[c[0] for c in STREAM_CASES])
@pytest.mark.parametrize("piece", [1, 7, 64, 0])
def test_codex_transcripts_parse_the_same_however_they_are_split(
    fixture: str, text: str, outcome: str | int, usage: tuple[int, ...] | None, piece: int
) -> None:
    """Conformance 5, 48, 55 and §6 items 35, 39 (frames split across reads)."""
    events = _parse_stream((FIXTURES / fixture).read_bytes(), piece=piece)
    assert isinstance(events[0], ir.Start) and events[0].id == "resp_0c5d1f2a9b8e47d6a1f3c2b4e5d6a7b8"
    assert _text(events) == text
    last = events[-1]
    if isinstance(outcome, int):
        assert isinstance(last, ir.StreamError) and last.status == outcome
        assert not any(isinstance(e, ir.End) for e in events)
    else:
        assert isinstance(last, ir.End) and last.finish.reason == outcome
        agg = _aggregate(events)
        u = agg.response.usage
        assert (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens) == usage


def test_crlf_line_endings_parse_like_lf() -> None:
    data = (FIXTURES / "codex_reasoning_text_two_calls.sse").read_bytes()
    assert _parse_stream(data.replace(b"\n", b"\r\n"), piece=5) == _parse_stream(data)


def test_reasoning_summary_parts_join_with_a_blank_line_under_one_final_signature() -> None:
    """Conformance 41 and §6 item 36: one block, the pre-content snapshot never used."""
    events = _fixture_events("codex_reasoning_text_two_calls.sse")
    reasoning = "".join(e.text for e in events if isinstance(e, ir.ReasoningDelta))
    assert reasoning == (
        "**Inspecting the repository**\n\nI'll list the files first.\n\n"
        "**Planning the edit**\n\nThen I'll read the failing test."
    )
    done = [e for e in events if isinstance(e, ir.ReasoningDone)]
    assert len(done) == 1 and done[0].family == "responses"
    assert done[0].signature.startswith("gAAAAABpI3q7") and "pre-snapshot" not in done[0].signature


def test_interleaved_argument_deltas_keep_to_their_own_call() -> None:
    """Conformance 24: the IR carries the interleaving; each index gets only its own fragments."""
    events = _fixture_events("codex_reasoning_text_two_calls.sse")
    starts = [(e.index, e.id, e.name) for e in events if isinstance(e, ir.ToolCallStart)]
    assert starts == [(0, "call_Q1wE3rT5yU7iO9pA", "shell"), (1, "call_Z2xC4vB6nM8kL0jH", "read_file")]
    order = [e.index for e in events if isinstance(e, ir.ToolCallDelta)]
    assert order == [0, 1, 0, 1, 1, 0]
    calls = _aggregate(events).response.tool_calls
    assert [orjson.loads(c.arguments) for c in calls] == [
        {"command": ["ls", "-la"], "workdir": "/repo"},
        {"path": "tests/test_app.py", "limit": 200},
    ]
    ends = [e.index for e in events if isinstance(e, ir.ToolCallEnd)]
    assert ends == [1, 0]


def test_a_call_seen_only_at_item_done_is_announced_then_ended() -> None:
    frames = (
        b'data: {"type":"response.created","response":{"id":"resp_1","model":"gpt-5.4"}}\n\n'
        b'data: {"type":"response.output_item.done","output_index":0,"item":{"id":"fc_1","type":"function_call",'
        b'"call_id":"call_1","name":"f","arguments":"{\\"a\\":1}"}}\n\n'
        b'data: {"type":"response.completed","response":{"id":"resp_1","status":"completed","output":[]}}\n\n'
    )
    events = _parse_stream(frames)
    assert _kinds(events) == ["Start", "ToolCallStart", "ToolCallDelta", "ToolCallEnd", "End"]
    assert events[-1] == ir.End(ir.Finish("tool_calls", "completed"))


def test_a_terminal_object_with_items_but_no_item_events_still_yields_them() -> None:
    body = _json("response_api_nonstream.json")
    frames = b"data: " + orjson.dumps({"type": "response.completed", "response": body}) + b"\n\n"
    events = _parse_stream(frames)
    assert _kinds(events) == [
        "Start",
        "ReasoningDelta",
        "ReasoningDone",
        "TextDelta",
        "ToolCallStart",
        "ToolCallDelta",
        "ToolCallEnd",
        "UsageUpdate",
        "End",
    ]


def test_malformed_frames_codex_extras_and_keepalives_are_ignored() -> None:
    """§6 item 39, providers §17.3."""
    frames = (
        b": keep-alive\n\n"
        b'event: codex.rate_limits\ndata: {"type":"codex.rate_limits","plan_type":"pro"}\n\n'
        b'data: {"type":"response.created","response":{"id":"resp_1"}}\n\n'
        b"data: {not json\n\n"
        b'data: {"type":"response.output_text.delta","item_id":"m","delta":"ok"}\n\n'
        b"data: [DONE]\n\n"
        b'data: {"type":"response.completed","response":{"status":"completed"}}'  # no blank line at the end
    )
    events = _parse_stream(frames)
    assert _kinds(events) == ["Start", "TextDelta", "End"]


def test_nothing_is_reported_after_the_terminal_event() -> None:
    data = (FIXTURES / "codex_plain_text.sse").read_bytes()
    late = b'data: {"type":"response.output_text.delta","delta":"late"}\n\n'
    assert _parse_stream(data + late) == _parse_stream(data)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        ({"type": "error", "code": "server_is_overloaded", "message": "busy"}, 529, "server_is_overloaded"),
        (
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "code": "context_length_exceeded", "message": "m"},
            },
            400,
            "context_length_exceeded",
        ),
        (
            {"type": "error", "error": {"type": "usage_limit_reached", "message": "m", "resets_in_seconds": 60}},
            429,
            "usage_limit_reached",
        ),
        ({"type": "error", "error": {"message": "Selected model is at capacity."}}, 429, ""),
        ({"type": "error", "error": {"code": "x", "message": "m", "status_code": 503}}, 503, "x"),
        (
            {
                "type": "response.failed",
                "response": {"status": "failed", "error": {"code": "server_error", "message": "m"}},
            },
            502,
            "server_error",
        ),
        ({"type": "response.failed", "response": {"status": "failed", "error": None}}, 502, ""),
    ],
)
def test_upstream_errors_become_stream_errors_with_a_status(error: dict[str, Any], status: int, code: str) -> None:
    """Providers §7.5."""
    events = _parse_stream(b"data: " + orjson.dumps(error) + b"\n\n")
    assert len(events) == 1 and isinstance(events[0], ir.StreamError)
    assert (events[0].status, events[0].type) == (status, code)


def test_a_non_stream_api_response_parses_into_the_ir_and_matches_the_stream_path() -> None:
    body = _json("response_api_nonstream.json")
    answer = resp.parse_response(body)
    assert answer.parts == [
        ir.Reasoning(
            "**Checking the weather tool**", "gAAAAABpI3r1Wq9eT8yU7iO6pA5sD4fG3hJ2kL1zX0cV9bN8mQ==", "responses"
        ),
        ir.Text("Let me check the weather in Paris."),
        ir.ToolCall("call_w1Xy2Zz3", "get_weather", '{"city":"Paris","unit":"celsius"}'),
    ]
    assert answer.finish == ir.Finish("tool_calls", "completed")
    assert answer.usage == ir.Usage(
        input_tokens=120, output_tokens=60, cached_tokens=100, reasoning_tokens=32, total_tokens=180
    )
    assert (answer.id, answer.model, answer.created) == (body["id"], body["model"], 1764000100)
    streamed = _aggregate(
        _parse_stream(b"data: " + orjson.dumps({"type": "response.completed", "response": body}) + b"\n\n")
    )
    assert streamed.response.parts == answer.parts
    assert resp.parse_response({"type": "response.completed", "response": body}) == answer


@pytest.mark.parametrize(
    ("body", "finish"),
    [
        (
            {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
            ir.Finish("length", "max_output_tokens"),
        ),
        (
            {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}},
            ir.Finish("content_filter", "content_filter"),
        ),
        ({"status": "incomplete", "incomplete_details": {"reason": "other"}}, ir.Finish("other", "other")),
        ({"status": "completed", "stop_sequence": "END"}, ir.Finish("stop_sequence", "completed", "END")),
        ({"status": "completed"}, ir.Finish("stop", "completed")),
    ],
)
def test_finish_reasons_follow_the_codex_table(body: dict[str, Any], finish: ir.Finish) -> None:
    """§4.7 Codex/Responses rows."""
    assert resp.parse_response(body).finish == finish


# --- errors, same-family path, purity ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (400, "invalid_request_error", None),
        (401, "authentication_error", "invalid_api_key"),
        (403, "permission_error", "insufficient_quota"),
        (404, "invalid_request_error", "model_not_found"),
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "server_error", "internal_server_error"),
        (529, "server_error", "server_is_overloaded"),
    ],
)
def test_error_bodies_use_the_openai_envelope_by_status(status: int, error_type: str, code: str | None) -> None:
    """§1.4."""
    body = orjson.loads(resp.error_body(status, "nope"))
    assert body == {"error": {"message": "nope", "type": error_type, "param": None, "code": code}}
    assert orjson.loads(resp.error_body(status, "nope", "custom"))["error"]["code"] == "custom"


def test_stream_error_frames_have_the_responses_shapes() -> None:
    kind, data = _frames(resp.stream_error(429, "slow down", sequence_number=7))[0]
    assert (kind, data) == (
        "error",
        {"type": "error", "sequence_number": 7, "code": "rate_limit_exceeded", "message": "slow down", "param": None},
    )
    kind, data = _frames(
        resp.stream_error(400, "too long", "context_length_exceeded", failed_response={"id": "resp_1"})
    )[0]
    assert kind == "response.failed"
    assert data["response"] == {
        "id": "resp_1",
        "status": "failed",
        "error": {"code": "context_length_exceeded", "message": "too long"},
    }


def test_the_same_family_path_applies_only_the_codex_rules() -> None:
    """D1.4, §2.2 and §6 item 46."""
    client = dict(
        CODEX_CLI,
        input="hello",
        max_output_tokens=10,
        temperature=0.5,
        user="u",
        truncation="auto",
        service_tier="flex",
        stream_options={"include_obfuscation": False, "reasoning_summary_delivery": "auto"},
        unknown_field={"kept": True},
    )
    del client["instructions"]
    body = resp.codex_body(client, "gpt-5.4")
    assert body["model"] == "gpt-5.4" and body["instructions"] == ""
    assert (body["stream"], body["store"], body["include"], body["parallel_tool_calls"]) == (
        True,
        False,
        ["reasoning.encrypted_content"],
        True,
    )
    assert not {"max_output_tokens", "temperature", "user", "truncation", "service_tier"} & set(body)
    assert body["stream_options"] == {"reasoning_summary_delivery": "auto"}
    assert body["input"] == [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}]
    assert body["tools"][-1]["type"] == "web_search" and body["unknown_field"] == {"kept": True}
    system_item = resp.codex_body({"model": "m", "input": [{"role": "system", "content": "s"}]}, "m")["input"][0]
    assert system_item["role"] == "developer"
    with pytest.raises(resp.BadRequest, match="previous_response_id"):
        resp.codex_body({"model": "m", "previous_response_id": "resp_1"}, "m")


@pytest.mark.parametrize("module", [resp, openai_responses_stream])
def test_the_dialect_modules_are_pure(module: Any) -> None:
    """No Django, no HTTP client, no I/O in a dialect module."""
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"django", "httpx", "aiohttp", "requests", "socket", "asyncio", "os", "pathlib", "io"}
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "open" not in called and "print" not in called


def _sse_frame(payload: dict[str, Any], end: bytes = b"\n\n") -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + end


def test_the_passthrough_framer_fills_an_empty_terminal_output_from_the_items_done() -> None:
    item = {"id": "msg_1", "type": "message", "content": [{"type": "output_text", "text": "hi"}]}
    delta = _sse_frame({"type": "response.output_text.delta", "sequence_number": 1, "delta": "hi"})
    done = _sse_frame({"type": "response.output_item.done", "sequence_number": 2, "output_index": 0, "item": item})
    completed = {"type": "response.completed", "sequence_number": 3, "response": {"id": "resp_1", "output": []}}
    wire = delta + done.replace(b"\n", b"\r\n") + _sse_frame(completed, end=b"")
    framer = openai_responses_stream.PassthroughFramer()
    out = b"".join(framer.feed(wire[i : i + 7]) for i in range(0, len(wire), 7)) + framer.finish()
    assert framer.finish() == b""
    frames = [f for f in out.split(b"\n\n") if f]
    assert frames[0] + b"\n\n" == delta and len(frames) == 3
    assert orjson.loads(frames[2].split(b"data: ", 1)[1])["response"]["output"] == [item]
    assert out.endswith(b"\n\n")


def test_the_passthrough_framer_leaves_a_terminal_output_that_is_there_alone() -> None:
    completed = {"type": "response.completed", "response": {"output": [{"id": "x", "type": "message"}]}}
    framer = openai_responses_stream.PassthroughFramer()
    assert framer.feed(_sse_frame(completed)) == _sse_frame(completed)
