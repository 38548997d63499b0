"""Gemini generateContent: both sides of the dialect, over recorded payloads in tests/fixtures/gemini/.

Conformance cases (spec "Conformance cases") are covered here at translation level on the Gemini side;
their numbers are given as ``C<n>`` in the test names' docstrings where it helps to find them.
"""

from __future__ import annotations

import ast
import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google import genai as google_genai
from google.genai import types as genai

from gateway import ir
from gateway.dialects import BadRequest, gemini, gemini_stream
from gateway.thinking import parse_suffix

FIXTURES = Path(__file__).parents[2] / "fixtures" / "gemini"
NAME_RULE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def load(name: str) -> Any:
    return orjson.loads(fixture(name))


SIG_CALL = load("response_thoughts_two_calls.json")["candidates"][0]["content"]["parts"][2]["thoughtSignature"]


def parse_stream(data: bytes, size: int = 0, req: ir.Request | None = None) -> list[ir.Event]:
    parser = gemini_stream.StreamParser(req)
    size = size or max(len(data), 1)
    events: list[ir.Event] = []
    for i in range(0, len(data), size):
        events += parser.feed(data[i : i + size])
    return events + parser.finish()


def aggregate(events: list[ir.Event]) -> ir.Aggregator:
    folded = ir.Aggregator()
    folded.feed(events)
    return folded


def render_stream(events: list[ir.Event], sse: bool = True, model: str = "gemini-2.5-pro") -> bytes:
    renderer = gemini_stream.StreamRenderer(ir.Request(model=model), sse=sse)
    return b"".join(renderer.feed(e) for e in events) + renderer.finish()


def sse_payloads(out: bytes) -> list[dict[str, Any]]:
    assert out.endswith(b"\n\n")
    frames = out.split(b"\n\n")[:-1]
    assert all(f.startswith(b"data: ") for f in frames)
    return [orjson.loads(f[6:]) for f in frames]


def texts(chunks: list[dict[str, Any]], thought: bool = False) -> str:
    return "".join(
        p.get("text", "")
        for c in chunks
        for p in c["candidates"][0]["content"]["parts"]
        if bool(p.get("thought")) == thought
    )


def user(*parts: ir.Part) -> ir.Message:
    return ir.Message("user", list(parts))


def assistant(*parts: ir.Part) -> ir.Message:
    return ir.Message("assistant", list(parts))


def request(*messages: ir.Message, model: str = "gemini-2.5-pro", **fields: Any) -> ir.Request:
    return ir.Request(model=model, messages=list(messages), **fields)


# --- upstream side: the stream parser -----------------------------------------------------------


@dataclass
class Expected:
    text: str
    finish: tuple[str, str]
    usage: ir.Usage
    reasoning: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    response_id: str = ""


RECORDED_STREAMS = {
    "stream_thoughts_two_calls.sse": Expected(
        text="Let me check both cities at once.",
        reasoning=(
            "**Planning the lookup**\n\nThe user wants the weather in two cities."
            " I'll call `get_weather` once per city, in parallel."
        ),
        calls=[
            ("get_weather", {"city": "Paris", "unit": "celsius"}),
            ("get_weather", {"city": "Rome", "unit": "celsius"}),
        ],
        finish=("tool_calls", "STOP"),
        usage=ir.Usage(input_tokens=112, output_tokens=290, cached_tokens=64, reasoning_tokens=242, total_tokens=402),
        response_id="Bx8kaeHnOp-Rz7IPj9nL4AU",
    ),
    "stream_max_tokens.sse": Expected(
        text="Once upon a time, in a valley between two rivers, there lived a",
        finish=("length", "MAX_TOKENS"),
        usage=ir.Usage(input_tokens=9, output_tokens=16, total_tokens=25),
        response_id="mAx3aZ2OKfyZz7IP4qGq-Qk",
    ),
    "stream_safety.sse": Expected(
        text="Here is how you",
        finish=("content_filter", "SAFETY"),
        usage=ir.Usage(input_tokens=14, output_tokens=4, total_tokens=18),
        response_id="q0d3abXXA8ywz7IPnZvD8Qo",
    ),
    "stream_no_alt.json": Expected(
        text='Hello, "world" {not json} [x]\\n!',
        finish=("stop", "STOP"),
        usage=ir.Usage(input_tokens=3, output_tokens=4, total_tokens=7),
        response_id="arr-1",
    ),
    "code_assist_stream.sse": Expected(
        text="Hi from Code Assist.",
        finish=("stop", "STOP"),
        usage=ir.Usage(input_tokens=4, output_tokens=3, total_tokens=7),
        response_id="ca-77",
    ),
}


@pytest.mark.parametrize("piece", [1, 3, 64, 0])
@pytest.mark.parametrize("name", RECORDED_STREAMS)
def test_recorded_upstream_streams_read_the_same_however_the_bytes_are_split(name: str, piece: int) -> None:
    """C46, C47 (stream side): MAX_TOKENS is length, SAFETY is content_filter; usage per R6."""
    expected = RECORDED_STREAMS[name]
    folded = aggregate(parse_stream(fixture(name), piece))
    resp = folded.response
    assert folded.ended and folded.error is None
    assert resp.id == expected.response_id
    assert resp.text == expected.text
    assert "".join(p.text for p in resp.parts if isinstance(p, ir.Reasoning)) == expected.reasoning
    assert [(c.name, orjson.loads(c.arguments)) for c in resp.tool_calls] == expected.calls
    assert (resp.finish.reason, resp.finish.native) == expected.finish
    assert resp.usage == expected.usage


def test_the_create_time_of_a_chunk_is_read_to_the_second() -> None:
    created = aggregate(parse_stream(fixture("code_assist_stream.sse"))).response.created
    assert created == int(datetime(2026, 3, 2, 10, 11, 12, tzinfo=UTC).timestamp())


def test_the_stream_events_come_in_the_order_gemini_sent_them() -> None:
    events = parse_stream(fixture("stream_thoughts_two_calls.sse"))
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "Start",
        "ReasoningDelta",
        "ReasoningDelta",
        "ReasoningDone",
        "TextDelta",
        "TextDelta",
        "ToolCallStart",
        "ToolCallDelta",
        "ToolCallEnd",
        "ToolCallStart",
        "ToolCallDelta",
        "ToolCallEnd",
        "UsageUpdate",
        "End",
    ]


def test_a_signature_on_a_text_part_closes_the_reasoning_block_before_it() -> None:
    resp = aggregate(parse_stream(fixture("stream_thoughts_two_calls.sse"))).response
    reasoning = resp.parts[0]
    assert isinstance(reasoning, ir.Reasoning)
    assert reasoning.family == "gemini" and reasoning.signature.startswith("CikB")


def test_parallel_calls_get_contiguous_indexes_and_distinct_ids_that_are_stable() -> None:
    """C25: the first call carries Gemini's signature, its sibling none."""
    events = parse_stream(fixture("stream_thoughts_two_calls.sse"))
    starts = [e for e in events if isinstance(e, ir.ToolCallStart)]
    assert [s.index for s in starts] == [0, 1]
    assert starts[0].id != starts[1].id
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", s.id) for s in starts)
    again = [e for e in parse_stream(fixture("stream_thoughts_two_calls.sse"), 5) if isinstance(e, ir.ToolCallStart)]
    assert [s.id for s in again] == [s.id for s in starts]
    assert starts[0].signature.startswith("CiQB") and starts[1].signature == ""


def test_an_upstream_call_id_is_kept() -> None:
    chunk = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}, "id": "fc-1"}}]}}]}
    events = parse_stream(b"data: " + orjson.dumps(chunk) + b"\n\n")
    assert [e.id for e in events if isinstance(e, ir.ToolCallStart)] == ["fc-1"]


def test_an_error_in_the_middle_of_the_stream_ends_it_after_the_text_already_sent() -> None:
    """C55, upstream side."""
    events = parse_stream(fixture("stream_error_midway.sse"), 11)
    assert isinstance(events[1], ir.TextDelta) and events[1].text == "The first"
    assert events[-1] == ir.StreamError(
        status=503, message="The model is overloaded. Please try again later.", type="UNAVAILABLE"
    )
    assert not any(isinstance(e, ir.End) for e in events)


def test_usage_of_intermediate_chunks_is_superseded_by_the_terminal_chunk() -> None:
    """§6 item 33."""
    events = parse_stream(fixture("stream_thoughts_two_calls.sse"))
    updates = [e for e in events if isinstance(e, ir.UsageUpdate)]
    assert len(updates) == 1 and updates[0].usage.output_tokens == 290


@pytest.mark.parametrize("ending", [b"", b"data: [DONE]\n\n"])
def test_a_stream_cut_before_its_finish_reason_still_ends_with_stop(ending: bytes) -> None:
    chunk = {"candidates": [{"content": {"parts": [{"text": "partial"}]}}], "responseId": "r1"}
    events = parse_stream(b"data: " + orjson.dumps(chunk) + b"\n\n" + ending)
    assert events[-1] == ir.End(ir.Finish("stop"))
    assert aggregate(events).response.text == "partial"


def test_a_finish_reason_without_usage_waits_for_the_end_of_the_stream() -> None:
    parser = gemini_stream.StreamParser()
    first = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]}
    late = {"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}}
    events = parser.feed(b"data: " + orjson.dumps(first) + b"\n\n")
    assert not any(isinstance(e, ir.End) for e in events)
    events += parser.feed(b"data: " + orjson.dumps(late) + b"\n\n") + parser.finish()
    assert aggregate(events).response.usage.total == 4
    assert sum(isinstance(e, ir.End) for e in events) == 1


def test_an_empty_upstream_stream_is_an_error() -> None:
    assert parse_stream(b"") == [
        ir.StreamError(status=502, message="the upstream closed the stream without a response")
    ]


def test_nothing_is_read_after_the_stream_ended() -> None:
    parser = gemini_stream.StreamParser()
    parser.feed(fixture("stream_max_tokens.sse"))
    assert parser.feed(b'data: {"candidates":[{"content":{"parts":[{"text":"late"}]}}]}\n\n') == []
    assert parser.finish() == []


def test_sanitised_names_in_the_stream_are_given_back_as_the_clients_originals() -> None:
    """C31."""
    req = request(user(ir.Text("hi")), tools=[ir.Tool(name="my tool/v2")])
    sent = gemini.render_request(req)["tools"][0]["functionDeclarations"][0]["name"]
    chunk = {"candidates": [{"content": {"parts": [{"functionCall": {"name": sent, "args": {"a": 1}}}]}}]}
    events = parse_stream(b"data: " + orjson.dumps(chunk) + b"\n\n", req=req)
    assert [e.name for e in events if isinstance(e, ir.ToolCallStart)] == ["my tool/v2"]


def test_a_nameless_function_call_continues_the_arguments_of_the_one_before() -> None:
    """§6 item 19."""
    first = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "write", "args": {"path": "a.txt"}}}]}}]}
    rest = {
        "candidates": [
            {"content": {"parts": [{"functionCall": {"name": "", "args": {"text": "hi"}}}]}, "finishReason": "STOP"}
        ]
    }
    events = parse_stream(b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in (first, rest)))
    calls = aggregate(events).response.tool_calls
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [("write", {"path": "a.txt", "text": "hi"})]


def test_inline_images_and_signature_only_parts_are_read() -> None:
    parts = [
        {"text": "Here:"},
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
        {"text": "", "thoughtSignature": "c2lnbmVk"},
    ]
    chunk = {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}], "usageMetadata": {}}
    resp = aggregate(parse_stream(b"data: " + orjson.dumps(chunk) + b"\n\n")).response
    assert resp.parts == [
        ir.Text("Here:"),
        ir.Image(data="/9j/4AAQ", media_type="image/jpeg"),
        ir.Reasoning(signature="c2lnbmVk", family="gemini"),
    ]


def test_a_blocked_prompt_ends_as_a_content_filter_stop() -> None:
    body = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 7}}
    resp = gemini.parse_response(body)
    assert resp.finish == ir.Finish("content_filter", native="PROHIBITED_CONTENT")


# --- upstream side: non-stream answers --------------------------------------------------------


def test_a_plain_answer_maps_its_text_finish_and_usage() -> None:
    """C2."""
    resp = gemini.parse_response(load("response_plain.json"))
    assert resp.text == "Paris is the capital of France."
    assert resp.finish == ir.Finish("stop", native="STOP")
    assert (resp.usage.input_tokens, resp.usage.total) == (8, 15)
    assert (resp.id, resp.model) == ("plainAnswer1", "gemini-2.0-flash")


def test_usage_counts_thoughts_as_output_and_cached_tokens_as_input() -> None:
    """C50, R6."""
    usage = gemini.parse_response(load("response_thoughts_two_calls.json")).usage
    assert usage == ir.Usage(
        input_tokens=100, output_tokens=80, cached_tokens=40, reasoning_tokens=50, total_tokens=180
    )


def test_thought_parts_and_calls_of_a_non_stream_answer_keep_their_order_and_signatures() -> None:
    resp = gemini.parse_response(load("response_thoughts_two_calls.json"))
    reasoning, text, first, second = resp.parts
    assert reasoning == ir.Reasoning(text="The user wants the forecast; I need the tool.", family="gemini")
    assert text == ir.Text("Checking now.")
    assert isinstance(first, ir.ToolCall) and isinstance(second, ir.ToolCall)
    assert (first.signature, second.signature) == (SIG_CALL, "")
    assert orjson.loads(second.arguments) == {"city": "Rome"}
    assert resp.finish == ir.Finish("tool_calls", native="STOP")


@pytest.mark.parametrize(
    ("native", "reason"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "other"),
        ("FINISH_REASON_UNSPECIFIED", "other"),
    ],
)
def test_each_gemini_finish_reason_has_one_neutral_meaning(native: str, reason: str) -> None:
    """C47, R5: never ``max_tokens`` or ``safety``."""
    body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": native}]}
    assert gemini.parse_response(body).finish == ir.Finish(reason, native=native)  # type: ignore[arg-type]


def test_a_code_assist_answer_is_unwrapped() -> None:
    body = {"response": load("response_plain.json"), "traceId": "abc"}
    assert gemini.parse_response(body).text == "Paris is the capital of France."


def test_an_error_body_is_not_an_answer() -> None:
    with pytest.raises(ValueError, match="Invalid function name"):
        gemini.parse_response(load("error_400.json"))


# --- client side: requests --------------------------------------------------------------------


def test_a_gemini_cli_request_reads_into_the_ir() -> None:
    req = gemini.parse_request(load("request_gemini_cli.json"), "models/gemini-2.5-pro", stream=True)
    assert (req.model, req.stream, req.source) == ("gemini-2.5-pro", True, "gemini")
    assert [s.parts for s in req.system] == [
        [ir.Text("You are an interactive CLI agent specializing in software engineering tasks.")]
    ]
    first, model_turn, results = req.messages
    assert first == user(
        ir.Text("This is the Gemini CLI. We are setting up the context for our chat."),
        ir.Text("Read README.md and tell me what it says."),
    )
    thought, call = model_turn.parts
    assert thought == ir.Reasoning(text="I'll read the file.", family="gemini")
    assert isinstance(call, ir.ToolCall) and call.signature == SIG_CALL
    assert results.parts == [
        ir.ToolResult(call_id="read_file-1761-0", name="read_file", content=[ir.Text("# Demo\nA demo project.")])
    ]
    assert [t.name for t in req.tools] == ["read_file", "run_shell_command"]
    assert req.tools[1].parameters["properties"]["command"] == {"type": "string"}
    assert req.tool_choice == ir.ToolChoice("auto")
    assert req.thinking == ir.Thinking(mode="auto", budget=-1, include_thoughts=True)
    assert (req.temperature, req.top_p) == (0, 1)
    assert req.extensions["gemini"]["cachedContent"] == "cachedContents/abc123"
    assert req.extensions["gemini"]["safetySettings"][0]["threshold"] == "BLOCK_ONLY_HIGH"


@pytest.mark.parametrize("key", ["systemInstruction", "system_instruction"])
def test_both_spellings_of_the_system_instruction_become_top_level_system_text(key: str) -> None:
    """C11, R4."""
    body = {key: {"parts": [{"text": "Be terse."}]}, "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    req = gemini.parse_request(body, "gemini-2.5-flash")
    assert req.top_level_system() == [ir.SystemSegment(parts=[ir.Text("Be terse.")])]
    assert req.messages == [user(ir.Text("hi"))]


def _two_unnamed_calls() -> dict[str, Any]:
    return {
        "contents": [
            {"role": "user", "parts": [{"text": "weather in Paris and Rome?"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"result": "rain"}}},
                ],
            },
        ]
    }


def test_calls_without_ids_get_stable_distinct_ids_and_results_pair_first_in_first_out() -> None:
    """C26."""
    req = gemini.parse_request(_two_unnamed_calls(), "gemini-2.5-flash")
    calls = [p for p in req.messages[1].parts if isinstance(p, ir.ToolCall)]
    results = [p for p in req.messages[2].parts if isinstance(p, ir.ToolResult)]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", c.id) for c in calls)
    assert calls[0].id != calls[1].id
    assert [r.call_id for r in results] == [c.id for c in calls]
    assert [r.content for r in results] == [[ir.Text("sunny")], [ir.Text("rain")]]
    again = gemini.parse_request(_two_unnamed_calls(), "gemini-2.5-flash")
    assert [p.id for p in again.messages[1].parts if isinstance(p, ir.ToolCall)] == [c.id for c in calls]


def test_results_pair_per_name_when_calls_interleave() -> None:
    calls = [{"functionCall": {"name": n, "args": {"i": i}}} for i, n in enumerate(["a", "b", "a"])]
    answers = [{"functionResponse": {"name": n, "response": {"result": n}}} for n in ["b", "a", "a"]]
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {"role": "model", "parts": calls},
            {"role": "user", "parts": answers},
        ]
    }
    req = gemini.parse_request(body, "m")
    a1, b, a2 = (p.id for p in req.messages[1].parts if isinstance(p, ir.ToolCall))
    assert [p.call_id for p in req.messages[2].parts if isinstance(p, ir.ToolResult)] == [b, a1, a2]


def test_an_explicit_response_id_wins_and_an_empty_response_name_is_back_filled() -> None:
    """§4.5, §6 item 22."""
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "a", "args": {}, "id": "x1"}},
                    {"functionCall": {"name": "b", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "", "response": {}}},
                    {"functionResponse": {"name": "a", "id": "x1", "response": {}}},
                ],
            },
        ]
    }
    req = gemini.parse_request(body, "m")
    b_id = req.messages[1].parts[1].id  # type: ignore[union-attr]
    first, second = req.messages[2].parts
    assert isinstance(first, ir.ToolResult) and (first.name, first.call_id) == ("b", b_id)
    assert isinstance(second, ir.ToolResult) and (second.name, second.call_id) == ("a", "x1")


def test_an_orphan_response_still_gets_a_deterministic_id() -> None:
    body = {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"output": 1}}}]}]}
    result = gemini.parse_request(body, "m").messages[0].parts[0]
    assert isinstance(result, ir.ToolResult) and result.call_id.startswith("call_") and result.content == [ir.Text("1")]


def test_an_error_response_is_marked_as_an_error() -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"error": "boom"}}}]}]
    }
    result = gemini.parse_request(body, "m").messages[0].parts[0]
    assert isinstance(result, ir.ToolResult) and result.is_error and result.content == [ir.Text("boom")]


def test_tool_roles_are_the_users_and_missing_roles_alternate() -> None:
    body = {
        "contents": [
            {"parts": [{"text": "a"}]},
            {"parts": [{"text": "b"}]},
            {"role": "function", "parts": [{"text": "c"}]},
            {"role": "tool", "parts": [{"text": "d"}]},
            {"parts": [{"text": "e"}]},
        ]
    }
    messages = gemini.parse_request(body, "m").messages
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2] == user(ir.Text("c"), ir.Text("d"))


def test_snake_case_spellings_are_read_like_camel_case_ones() -> None:
    body = {
        "system_instruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {"role": "user", "parts": [{"inline_data": {"mime_type": "image/png", "data": "iVBOR"}}]},
            {
                "role": "model",
                "parts": [{"function_call": {"name": "f", "args": {"x": 1}}, "thought_signature": "c2ln"}],
            },
            {"role": "user", "parts": [{"function_response": {"name": "f", "response": {"result": "ok"}}}]},
        ],
        "tools": [{"function_declarations": [{"name": "f", "parameters_json_schema": {"type": "object"}}]}],
        "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["f"]}},
        "generation_config": {
            "max_output_tokens": 64,
            "stop_sequences": ["END"],
            "thinking_config": {"thinking_level": "LOW"},
        },
    }
    req = gemini.parse_request(body, "gemini-3-pro-preview")
    assert req.messages[0] == user(ir.Image(data="iVBOR", media_type="image/png"))
    assert req.messages[1].parts[0] == ir.ToolCall(
        id=req.messages[1].parts[0].id, name="f", arguments='{"x":1}', signature="c2ln"
    )  # type: ignore[union-attr]
    assert isinstance(req.messages[2].parts[0], ir.ToolResult)
    assert req.tools[0].parameters == {"type": "object"}
    assert req.tool_choice == ir.ToolChoice("tool", name="f")
    assert (req.max_tokens, req.stop) == (64, ["END"])
    assert req.thinking == ir.Thinking(mode="level", level="low")


@pytest.mark.parametrize(
    ("config", "thinking"),
    [
        ({"thinkingLevel": "HIGH", "thinkingBudget": 100}, ir.Thinking(mode="level", level="high")),
        ({"thinkingBudget": 0}, ir.Thinking(mode="none", budget=0)),
        ({"thinkingBudget": -1}, ir.Thinking(mode="auto", budget=-1)),
        (
            {"thinkingBudget": 2048, "includeThoughts": False},
            ir.Thinking(mode="budget", budget=2048, include_thoughts=False),
        ),
        ({"includeThoughts": True}, ir.Thinking(include_thoughts=True)),
    ],
)
def test_the_thinking_config_level_wins_over_the_budget(config: dict[str, Any], thinking: ir.Thinking) -> None:
    body = {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"thinkingConfig": config}}
    assert gemini.parse_request(body, "m").thinking == thinking


@pytest.mark.parametrize(
    ("config", "choice", "allowed"),
    [
        ({"mode": "AUTO"}, ir.ToolChoice("auto"), None),
        ({"mode": "NONE"}, ir.ToolChoice("none"), None),
        ({"mode": "ANY"}, ir.ToolChoice("required"), None),
        ({"mode": "ANY", "allowedFunctionNames": ["a", "b"]}, ir.ToolChoice("required"), ["a", "b"]),
        ({"mode": "ANY", "allowedFunctionNames": ["a"]}, ir.ToolChoice("tool", name="a"), None),
    ],
)
def test_function_calling_modes_become_tool_choices(
    config: dict[str, Any], choice: ir.ToolChoice, allowed: Any
) -> None:
    body = {"contents": [{"parts": [{"text": "x"}]}], "toolConfig": {"functionCallingConfig": config}}
    req = gemini.parse_request(body, "m")
    assert req.tool_choice == choice
    assert req.extensions.get("gemini", {}).get("allowedFunctionNames") == allowed


def test_structured_output_reads_as_a_response_format() -> None:
    schema_body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT"}},
    }
    fmt = gemini.parse_request(schema_body, "m").response_format
    assert fmt == ir.ResponseFormat("json_schema", name="response", schema={"type": "object"})
    plain = {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "application/json"}}
    assert gemini.parse_request(plain, "m").response_format == ir.ResponseFormat("json_object")


def test_built_in_tools_and_unknown_fields_are_kept_for_gemini() -> None:
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "tools": [{"googleSearch": {}}, {"code_execution": {}}, {"urlContext": {}}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "16:9"},
            "seed": 7,
        },
        "safety_settings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
        "labels": {"team": "a"},
    }
    req = gemini.parse_request(body, "m")
    assert [(t.kind, t.builtin) for t in req.tools] == [
        ("builtin", {"googleSearch": {}}),
        ("builtin", {"codeExecution": {}}),
        ("builtin", {"urlContext": {}}),
    ]
    ext = req.extensions["gemini"]
    assert ext["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "16:9"},
        "seed": 7,
    }
    assert set(ext) == {"generationConfig", "safetySettings", "labels"}


def test_media_parts_become_images_audio_or_files_by_mime_type() -> None:
    parts = [
        {"inlineData": {"mimeType": "audio/mpeg", "data": "SUQz"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBER"}},
        {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/cat.png"}},
        {
            "fileData": {
                "mimeType": "video/mp4",
                "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc",
            }
        },
    ]
    req = gemini.parse_request({"contents": [{"role": "user", "parts": parts}]}, "m")
    assert req.messages[0].parts == [
        ir.Audio(data="SUQz", format="mp3"),
        ir.File(data="JVBER", media_type="application/pdf", filename="document.pdf"),
        ir.Image(url="gs://b/cat.png", media_type="image/png"),
        ir.File(url="https://generativelanguage.googleapis.com/v1beta/files/abc", media_type="video/mp4"),
    ]


def test_an_image_next_to_a_function_response_belongs_to_that_result() -> None:
    parts = [
        {"functionResponse": {"name": "shot", "response": {"result": "done"}}},
        {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
        {"text": "what do you see?"},
    ]
    req = gemini.parse_request({"contents": [{"role": "user", "parts": parts}]}, "m")
    result, text = req.messages[0].parts
    assert isinstance(result, ir.ToolResult)
    assert result.content == [ir.Text("done"), ir.Image(data="iVBOR", media_type="image/png")]
    assert text == ir.Text("what do you see?")


def test_streamed_text_parts_merge_and_empty_ones_are_skipped() -> None:
    """§6 item 1."""
    parts = [{"text": "Hel"}, {"text": ""}, {"text": "lo"}]
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": parts},
            {"role": "model", "parts": [{"text": ""}]},
        ]
    }
    assert gemini.parse_request(body, "m").messages[1:] == [assistant(ir.Text("Hello"))]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "JSON object"),
        ({}, "'contents' is required"),
        ({"contents": []}, "'contents' is required"),
        ({"contents": "hi"}, "'contents' is required"),
        ({"contents": ["hi"]}, r"contents\[0\] must be an object"),
        ({"contents": [{"parts": {}}]}, r"contents\[0\].parts must be an array"),
        ({"contents": [{"parts": ["x"]}]}, r"parts\[0\] must be an object"),
        ({"contents": [{"parts": [{"text": 3}]}]}, "text must be a string"),
        ({"contents": [{"parts": [{"functionCall": {"args": {}}}]}]}, "functionCall.name is required"),
        ({"contents": [{"parts": [{"text": "x"}]}], "tools": {}}, "'tools' must be an array"),
        ({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{}]}]}, "needs a 'name'"),
        ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": []}, "must be an object"),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": "hot"}},
            "temperature must be a number",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"thinkingConfig": {"thinkingBudget": -5}}},
            "≥ -1",
        ),
        ({"contents": [{"parts": [{"text": "x"}]}], "systemInstruction": 5}, "systemInstruction"),
    ],
)
def test_it_rejects_invalid_bodies_with_a_clear_reason(body: Any, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        gemini.parse_request(body, "gemini-2.5-pro")


def test_the_model_path_is_required() -> None:
    with pytest.raises(BadRequest, match="model"):
        gemini.parse_request({"contents": [{"parts": [{"text": "x"}]}]}, "models/")


def test_count_tokens_accepts_a_wrapped_generate_content_request() -> None:
    body = {"generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": [{"parts": [{"text": "x"}]}]}}
    assert gemini.parse_count_tokens_request(body, "ignored").model == "gemini-2.5-flash"


# --- upstream side: requests ------------------------------------------------------------------


def test_system_text_is_top_level_then_in_conversation_segments_and_adjacent_user_turns_merge() -> None:
    """C13, D3, §6 item 6: Claude attribution text never reaches Gemini."""
    req = request(
        user(ir.Text("first")),
        assistant(ir.Text("answer")),
        user(ir.Text("second")),
        user(ir.Text("third")),
        system=[
            ir.SystemSegment(
                parts=[ir.Text("x-anthropic-billing-header: cc_version=2.1"), ir.Text("You are Claude Code.")]
            ),
            ir.SystemSegment(parts=[ir.Text("Mid-conversation note.")], position=3),
        ],
    )
    body = gemini.render_request(req)
    assert body["systemInstruction"] == {
        "parts": [{"text": "You are Claude Code."}, {"text": "Mid-conversation note."}]
    }
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "answer"}]},
        {"role": "user", "parts": [{"text": "second"}, {"text": "third"}]},
    ]


def test_a_system_only_request_is_sent_as_user_content() -> None:
    """§6 item 2."""
    body = gemini.render_request(request(system=[ir.SystemSegment(parts=[ir.Text("Say hi.")])]))
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hi."}]}]
    assert "systemInstruction" not in body


def test_a_leading_model_turn_gets_an_empty_user_turn_and_a_trailing_prefill_is_dropped() -> None:
    """C16, §6 item 7."""
    req = request(assistant(ir.Text("Hello! How can I help?")), user(ir.Text("Write JSON")), assistant(ir.Text("{")))
    assert gemini.render_request(req)["contents"] == [
        {"role": "user", "parts": [{"text": ""}]},
        {"role": "model", "parts": [{"text": "Hello! How can I help?"}]},
        {"role": "user", "parts": [{"text": "Write JSON"}]},
    ]


def test_downloaded_images_are_inline_data_and_an_undownloaded_url_is_an_error() -> None:
    """C18, C19, R3: the relay inlines http(s) images first; an URL left here is a bug, never dropped."""
    req = request(user(ir.Text("what is this"), ir.Image(data="iVBOR", media_type="image/webp"), ir.Image(data="R0lG")))
    assert gemini.render_request(req)["contents"][0]["parts"][1:] == [
        {"inlineData": {"mimeType": "image/webp", "data": "iVBOR"}},
        {"inlineData": {"mimeType": "image/png", "data": "R0lG"}},
    ]
    with pytest.raises(ValueError, match="must be downloaded"):
        gemini.render_request(request(user(ir.Image(url="https://example.com/cat.png"))))


@pytest.mark.parametrize(
    ("part", "wire"),
    [
        (ir.Image(url="data:image/gif;base64,R0lGOD"), {"inlineData": {"mimeType": "image/gif", "data": "R0lGOD"}}),
        (
            ir.Image(url="gs://bucket/a.png", media_type="image/png"),
            {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/a.png"}},
        ),
        (
            ir.File(data="JVBER", media_type="application/pdf"),
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBER"}},
        ),
        (
            ir.File(url="https://x.test/a.pdf", media_type="application/pdf"),
            {"fileData": {"mimeType": "application/pdf", "fileUri": "https://x.test/a.pdf"}},
        ),
        (ir.Audio(data="UklG"), {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}}),
        (ir.Audio(data="SUQz", format="mp3"), {"inlineData": {"mimeType": "audio/mpeg", "data": "SUQz"}}),
        (ir.Audio(data="AAAA", format="pcm16"), {"inlineData": {"mimeType": "audio/pcm", "data": "AAAA"}}),
        (ir.Audio(data="AAAA", format="g711_ulaw"), {"inlineData": {"mimeType": "audio/basic", "data": "AAAA"}}),
        (ir.Audio(data="AAAA", format="flac"), {"inlineData": {"mimeType": "audio/flac", "data": "AAAA"}}),
    ],
)
def test_media_parts_are_written_as_gemini_blobs(part: ir.Part, wire: dict[str, Any]) -> None:
    assert gemini.render_request(request(user(part)))["contents"][0]["parts"] == [wire]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (ir.ToolChoice("tool", name="get_weather"), {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
        (ir.ToolChoice("none"), {"mode": "NONE"}),
        (ir.ToolChoice("auto"), {"mode": "AUTO"}),
        (ir.ToolChoice("required"), {"mode": "ANY"}),
    ],
)
def test_tool_choice_becomes_the_function_calling_config(choice: ir.ToolChoice, config: dict[str, Any]) -> None:
    """C27, R2."""
    req = request(user(ir.Text("x")), tools=[ir.Tool(name="get_weather")], tool_choice=choice)
    assert gemini.render_request(req)["toolConfig"] == {"functionCallingConfig": config}


def _history_with_calls() -> list[ir.Message]:
    return [
        user(ir.Text("look up my orders")),
        assistant(
            ir.Reasoning(text="Need both orders.", signature="EqQBCkYIBxgCKkD", family="claude"),
            ir.ToolCall(id="toolu_01AbCdEf", name="lookup_order", arguments='{"id": 1}'),
            ir.ToolCall(id="toolu_02GhIjKl", name="lookup_order", arguments='{"id": 2}'),
        ),
        user(
            ir.ToolResult(call_id="toolu_02GhIjKl", content=[ir.Text("shipped")]),
            ir.ToolResult(call_id="toolu_01AbCdEf", content=[ir.Text('{"t":21}')]),
        ),
    ]


def test_parallel_calls_share_one_model_turn_and_their_results_one_user_turn_in_call_order() -> None:
    """C42, §6 item 11, §4.9.7: Claude thinking is dropped; only the first call gets the sentinel."""
    contents = gemini.render_request(request(*_history_with_calls()))["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    first, second = contents[1]["parts"]
    assert first == {
        "functionCall": {"name": "lookup_order", "args": {"id": 1}, "id": "toolu_01AbCdEf"},
        "thoughtSignature": "skip_thought_signature_validator",
    }
    assert second == {"functionCall": {"name": "lookup_order", "args": {"id": 2}, "id": "toolu_02GhIjKl"}}
    assert [p["functionResponse"]["id"] for p in contents[2]["parts"]] == ["toolu_01AbCdEf", "toolu_02GhIjKl"]


def test_function_responses_take_their_name_from_the_call_and_wrap_the_value_in_result() -> None:
    """C29 (R13) and C30 (R1): a plain string stays a string, JSON text is parsed, the id is set."""
    parts = gemini.render_request(request(*_history_with_calls()))["contents"][2]["parts"]
    assert parts == [
        {"functionResponse": {"name": "lookup_order", "id": "toolu_01AbCdEf", "response": {"result": {"t": 21}}}},
        {"functionResponse": {"name": "lookup_order", "id": "toolu_02GhIjKl", "response": {"result": "shipped"}}},
    ]


def test_a_failed_tool_result_is_sent_as_an_error() -> None:
    req = request(
        user(ir.Text("x")),
        assistant(ir.ToolCall(id="c1", name="f")),
        user(ir.ToolResult(call_id="c1", content=[ir.Text("denied")], is_error=True)),
    )
    assert gemini.render_request(req)["contents"][2]["parts"][0]["functionResponse"]["response"] == {"error": "denied"}


def test_images_of_a_tool_result_follow_its_function_response_as_siblings() -> None:
    """C33, §6 item 26."""
    req = request(
        user(ir.Text("screenshot please")),
        assistant(ir.ToolCall(id="toolu_1", name="screenshot", arguments="{}")),
        user(
            ir.ToolResult(
                call_id="toolu_1", content=[ir.Text("captured"), ir.Image(data="iVBOR", media_type="image/png")]
            )
        ),
    )
    assert gemini.render_request(req)["contents"][2]["parts"] == [
        {"functionResponse": {"name": "screenshot", "id": "toolu_1", "response": {"result": "captured"}}},
        {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
    ]


def test_tool_names_are_sanitised_for_gemini_and_collisions_stay_distinct() -> None:
    """C31, §4.4.3."""
    long_name = "mcp__srv__" + "x" * 60
    tools = [ir.Tool(name="my tool/v2"), ir.Tool(name=long_name), ir.Tool(name="my_tool_v2"), ir.Tool(name="9lives")]
    req = request(
        user(ir.Text("x")),
        assistant(ir.ToolCall(id="c1", name="my tool/v2")),
        user(ir.ToolResult(call_id="c1", content=[ir.Text("ok")])),
        tools=tools,
        tool_choice=ir.ToolChoice("tool", name="my tool/v2"),
    )
    body = gemini.render_request(req)
    names = [d["name"] for d in body["tools"][0]["functionDeclarations"]]
    assert all(NAME_RULE.match(n) for n in names)
    assert len(set(names)) == 4
    assert names[0] == "my_tool_v2" and names[2].startswith("my_tool_v2_") and names[3] == "_9lives"
    assert body["contents"][1]["parts"][0]["functionCall"]["name"] == names[0]
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == names[0]
    assert body["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] == [names[0]]
    answer = {"candidates": [{"content": {"parts": [{"functionCall": {"name": n, "args": {}}} for n in names]}}]}
    assert [c.name for c in gemini.parse_response(answer, req).tool_calls] == [t.name for t in tools]


def test_tool_schemas_are_cleaned_and_declared_once() -> None:
    tools = [
        ir.Tool(
            name="f",
            description="Find",
            parameters={
                "type": "object",
                "properties": {"q": {"type": "string", "minLength": 1}},
                "additionalProperties": False,
            },
        ),
        ir.Tool(name="f", description="duplicate"),
        ir.Tool(name="patch", kind="custom", format={"type": "grammar"}),
        ir.Tool(name="web_search", kind="builtin", builtin={"type": "web_search_20250305", "name": "web_search"}),
        ir.Tool(name="google_search", kind="builtin", builtin={"google_search": {}}),
        ir.Tool(name="bash", kind="builtin", builtin={"type": "bash_20250124", "name": "bash"}),
    ]
    body = gemini.render_request(request(user(ir.Text("x")), tools=tools))
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "f",
                    "description": "Find",
                    "parametersJsonSchema": {
                        "type": "object",
                        "properties": {"q": {"type": "string", "description": "minLength: 1"}},
                        "description": "No extra properties allowed",
                    },
                },
                {
                    "name": "patch",
                    "parametersJsonSchema": {
                        "type": "object",
                        "properties": {"input": {"type": "string"}},
                        "required": ["input"],
                    },
                },
            ]
        },
        {"googleSearch": {}},
    ]


@pytest.mark.parametrize(
    ("model", "thinking", "config"),
    [
        ("gemini-2.5-pro", ir.Thinking(mode="budget", budget=8192), {"thinkingBudget": 8192}),
        (
            "gemini-2.5-flash",
            ir.Thinking(mode="budget", budget=8192, include_thoughts=True),
            {"includeThoughts": True, "thinkingBudget": 8192},
        ),
        ("gemini-2.5-pro", ir.Thinking(mode="level", level="high"), {"thinkingBudget": 24576}),
        ("gemini-3-pro-preview", ir.Thinking(mode="level", level="low"), {"thinkingLevel": "low"}),
        ("gemini-3-pro-preview", ir.Thinking(mode="none", budget=0), {"thinkingLevel": "low"}),
        ("gemini-2.5-flash", ir.Thinking(mode="auto", budget=-1), {"thinkingBudget": -1}),
        ("gemini-2.5-flash", ir.Thinking(mode="none", budget=0), {"thinkingBudget": 0}),
        ("gemini-2.5-pro", ir.Thinking(mode="none", budget=0, include_thoughts=True), None),
        ("my-own-model", ir.Thinking(mode="level", level="medium"), {"thinkingBudget": 8192}),
        ("gemini-2.5-pro", ir.Thinking(include_thoughts=False), {"includeThoughts": False}),
    ],
)
def test_the_thinking_writer_uses_levels_or_budgets_as_the_model_takes_them(
    model: str, thinking: ir.Thinking, config: dict[str, Any] | None
) -> None:
    """C37, §4.9.4."""
    body = gemini.render_request(request(user(ir.Text("x")), model=model, thinking=thinking))
    assert body.get("generationConfig", {}).get("thinkingConfig") == config


def test_a_model_name_suffix_reaches_gemini_as_a_thinking_budget() -> None:
    """C38: the relay splits the suffix; the writer sends the budget."""
    model, thinking = parse_suffix("gemini-2.5-pro(1024)")
    body = gemini.render_request(request(user(ir.Text("x")), model=model, thinking=thinking))
    assert model == "gemini-2.5-pro"
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}


def test_reasoning_replays_only_to_gemini_with_its_own_signatures() -> None:
    """§4.9.7, §6 item 48."""
    req = request(
        user(ir.Text("q")),
        assistant(
            ir.Reasoning(text="gemini thought", signature="c2lnMQ==", family="gemini"),
            ir.Reasoning(text="openai reasoning_content"),
            ir.Reasoning(signature="b3RoZXI=", family="claude", redacted=True),
            ir.Reasoning(signature="c2lnMg==", family="gemini"),
            ir.Text("answer"),
            ir.ToolCall(id="c1", name="f", arguments="{'a': 1,}", signature="bmF0aXZl"),
        ),
        user(ir.ToolResult(call_id="c1", content=[ir.Text("done")])),
    )
    assert gemini.render_request(req)["contents"][1]["parts"] == [
        {"text": "gemini thought", "thought": True, "thoughtSignature": "c2lnMQ=="},
        {"text": "openai reasoning_content", "thought": True, "thoughtSignature": "skip_thought_signature_validator"},
        {"text": "answer", "thoughtSignature": "c2lnMg=="},
        {"functionCall": {"name": "f", "args": {"a": 1}, "id": "c1"}, "thoughtSignature": "bmF0aXZl"},
    ]


@pytest.mark.parametrize(
    ("arguments", "args"), [("", {}), ("not json", {}), ("[1, 2]", {}), ('{"a": [1]}', {"a": [1]})]
)
def test_call_arguments_in_history_are_parsed_tolerantly(arguments: str, args: dict[str, Any]) -> None:
    """§6 item 17."""
    req = request(
        user(ir.Text("q")),
        assistant(ir.ToolCall(id="c", name="f", arguments=arguments)),
        user(ir.ToolResult(call_id="c")),
    )
    assert gemini.render_request(req)["contents"][1]["parts"][0]["functionCall"]["args"] == args


def test_empty_messages_and_empty_text_parts_are_skipped() -> None:
    """§6 item 1."""
    req = request(
        user(ir.Text("hi"), ir.Text("")), assistant(ir.Reasoning(text="x", family="claude")), user(ir.Text("again"))
    )
    assert gemini.render_request(req)["contents"] == [{"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]}]


def test_structured_output_schemas_go_to_gemini_unchanged() -> None:
    """C43: responseJsonSchema accepts full JSON Schema, so it is not cleaned."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {"a": {"type": ["string", "null"]}},
    }
    fmt = ir.ResponseFormat("json_schema", name="x", schema=schema, strict=True)
    generation = gemini.render_request(request(user(ir.Text("x")), response_format=fmt))["generationConfig"]
    assert generation == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    plain = gemini.render_request(request(user(ir.Text("x")), response_format=ir.ResponseFormat("json_object")))
    assert plain["generationConfig"] == {"responseMimeType": "application/json"}
    assert "generationConfig" not in gemini.render_request(
        request(user(ir.Text("x")), response_format=ir.ResponseFormat("text"))
    )


def test_sampling_limits_and_stop_sequences_are_generation_config() -> None:
    """C44, R2, §6 item 41."""
    req = request(user(ir.Text("x")), stop=["END"], max_tokens=50, temperature=0.2, top_p=0.9, top_k=40, n=2)
    assert gemini.render_request(req)["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "topK": 40,
        "maxOutputTokens": 50,
        "stopSequences": ["END"],
        "candidateCount": 2,
    }
    assert "candidateCount" not in gemini.render_request(request(user(ir.Text("x")), n=1)).get("generationConfig", {})


def test_default_safety_settings_are_added_only_when_the_client_sent_none() -> None:
    """§2.4, §6 item 45."""
    defaults = gemini.render_request(request(user(ir.Text("x"))))["safetySettings"]
    assert [(s["category"], s["threshold"]) for s in defaults] == [
        ("HARM_CATEGORY_HARASSMENT", "OFF"),
        ("HARM_CATEGORY_HATE_SPEECH", "OFF"),
        ("HARM_CATEGORY_SEXUALLY_EXPLICIT", "OFF"),
        ("HARM_CATEGORY_DANGEROUS_CONTENT", "OFF"),
        ("HARM_CATEGORY_CIVIC_INTEGRITY", "BLOCK_NONE"),
    ]
    own = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_LOW_AND_ABOVE"}]
    req = request(user(ir.Text("x")), extensions={"gemini": {"safetySettings": own}})
    assert gemini.render_request(req)["safetySettings"] == own


def test_gemini_extensions_from_another_client_are_merged_under_the_ir_fields() -> None:
    """D1.6: an OpenAI client's ``generationConfig`` is copied, snake_case keys normalised."""
    ext = {
        "gemini": {
            "generationConfig": {
                "temperature": 1.5,
                "response_modalities": ["IMAGE"],
                "thinking_config": {"include_thoughts": True},
            },
            "cachedContent": "c/1",
        }
    }
    req = request(user(ir.Text("x")), temperature=0.1, thinking=ir.Thinking(mode="budget", budget=512), extensions=ext)
    body = gemini.render_request(req)
    assert body["generationConfig"] == {
        "temperature": 0.1,
        "responseModalities": ["IMAGE"],
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 512},
    }
    assert body["cachedContent"] == "c/1"


def test_a_gemini_request_survives_the_round_trip_through_the_ir() -> None:
    body = gemini.render_request(gemini.parse_request(load("request_gemini_cli.json"), "gemini-2.5-pro"))
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"][1]["thoughtSignature"] == SIG_CALL
    assert body["contents"][2]["parts"][0]["functionResponse"] == {
        "name": "read_file",
        "id": "read_file-1761-0",
        "response": {"result": "# Demo\nA demo project."},
    }
    declared = body["tools"][0]["functionDeclarations"][1]["parametersJsonSchema"]
    assert declared == {
        "type": "object",
        "properties": {"command": {"type": "string"}, "directory": {"type": "string"}},
        "required": ["command"],
    }
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": -1}
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_ONLY_HIGH"}]
    assert body["cachedContent"] == "cachedContents/abc123"


def test_count_tokens_wraps_the_full_request_with_its_model() -> None:
    """C56, R18: system instruction and tools are counted."""
    req = request(
        user(ir.Text("x")),
        tools=[ir.Tool(name="f")],
        system=[ir.SystemSegment(parts=[ir.Text("sys")])],
        model="models/gemini-2.5-flash",
    )
    wrapped = gemini.render_count_tokens(req)["generateContentRequest"]
    assert wrapped["model"] == "models/gemini-2.5-flash"
    assert wrapped["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert wrapped["tools"][0]["functionDeclarations"][0]["name"] == "f"


def test_the_code_assist_envelope_wraps_and_unwraps() -> None:
    """§1.6."""
    body = {"model": "gemini-2.5-pro", "system_instruction": {"parts": []}, "contents": [], "safetySettings": []}
    wrapped = gemini.wrap_code_assist(body, "models/gemini-2.5-pro", "proj-1")
    assert wrapped == {
        "project": "proj-1",
        "model": "gemini-2.5-pro",
        "request": {"systemInstruction": {"parts": []}, "contents": [], "safetySettings": []},
    }
    assert gemini.wrap_code_assist_count_tokens(wrapped["request"]) == {
        "request": {"systemInstruction": {"parts": []}, "contents": []}
    }
    assert gemini.unwrap_code_assist({"response": {"candidates": []}, "traceId": "t"}) == {"candidates": []}
    assert gemini.unwrap_code_assist({"candidates": []}) == {"candidates": []}


def test_vertex_bodies_can_drop_call_ids() -> None:
    body = gemini.render_request(request(*_history_with_calls()))
    gemini.strip_call_ids(body)
    assert not any(
        "id" in p.get("functionCall", p.get("functionResponse", {})) for c in body["contents"] for p in c["parts"]
    )


def test_a_gemini_body_for_a_gemini_upstream_is_only_normalised() -> None:
    """D1.4: roles, spelling, schema key, names, signatures, safety, leading user turn."""
    body = {
        "model": "x",
        "system_instruction": {"parts": [{"text": "s"}]},
        "contents": [
            {
                "parts": [
                    {"functionCall": {"name": "a", "args": {}}, "thought_signature": "c2ln"},
                    {"functionCall": {"name": "b", "args": {}}, "thoughtSignature": "!!"},
                ]
            },
            {
                "role": "tool",
                "parts": [
                    {"functionResponse": {"name": "", "response": {}}, "thoughtSignature": "c2ln"},
                    {"functionResponse": {"name": "b", "response": {}}},
                ],
            },
        ],
        "generationConfig": {"responseSchema": {"type": "OBJECT"}},
    }
    body["contents"][0]["role"] = "model"
    out = gemini.normalize_request(body)
    assert "model" not in out and out["systemInstruction"] == {"parts": [{"text": "s"}]}
    assert out["contents"][0] == {"role": "user", "parts": [{"text": ""}]}
    assert out["contents"][1]["parts"] == [
        {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "b", "args": {}}},
    ]
    assert out["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "a", "response": {}}},
            {"functionResponse": {"name": "b", "response": {}}},
        ],
    }
    assert out["generationConfig"] == {"responseJsonSchema": {"type": "object"}}
    assert len(out["safetySettings"]) == 5
    assert body["contents"][1]["parts"][0]["functionResponse"]["name"] == ""  # the caller's body is untouched


# --- client side: answers ---------------------------------------------------------------------


def _answer() -> ir.Response:
    return ir.Response(
        id="resp-1",
        parts=[
            ir.Reasoning(text="thinking it over", signature="c2lnMQ==", family="gemini"),
            ir.Text("Here you go."),
            ir.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}', signature="c2lnMg=="),
            ir.ToolCall(id="call_2", name="get_weather", arguments="{'city': 'Rome',}"),
            ir.Image(data="iVBORw==", media_type="image/png"),
        ],
        finish=ir.Finish("tool_calls"),
        usage=ir.Usage(input_tokens=100, output_tokens=80, cached_tokens=40, reasoning_tokens=50, total_tokens=180),
    )


def test_an_answer_renders_as_a_generate_content_response() -> None:
    """§2.4, R6: candidates exclude thoughts; a tool-call stop is STOP."""
    body = gemini.render_response(_answer(), request(model="gemini-2.5-pro"))
    assert body == {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking it over", "thought": True, "thoughtSignature": "c2lnMQ=="},
                        {"text": "Here you go."},
                        {
                            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"},
                            "thoughtSignature": "c2lnMg==",
                        },
                        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}, "id": "call_2"}},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": 30,
            "totalTokenCount": 180,
            "cachedContentTokenCount": 40,
            "thoughtsTokenCount": 50,
        },
        "modelVersion": "gemini-2.5-pro",
        "responseId": "resp-1",
    }
    genai.GenerateContentResponse.model_validate(body)


@pytest.mark.parametrize(
    ("finish", "wire"),
    [
        (ir.Finish("stop"), "STOP"),
        (ir.Finish("stop_sequence", stop_sequence="END"), "STOP"),
        (ir.Finish("length", native="max_tokens"), "MAX_TOKENS"),
        (ir.Finish("tool_calls", native="MAX_TOKENS"), "STOP"),
        (ir.Finish("content_filter"), "SAFETY"),
        (ir.Finish("content_filter", native="RECITATION"), "RECITATION"),
        (ir.Finish("refusal", native="refusal"), "SAFETY"),
        (ir.Finish("pause_turn"), "STOP"),
        (ir.Finish("other", native="MALFORMED_FUNCTION_CALL"), "MALFORMED_FUNCTION_CALL"),
        (ir.Finish("other"), "OTHER"),
    ],
)
def test_every_neutral_finish_reason_has_a_gemini_value(finish: ir.Finish, wire: str) -> None:
    """§4.7 "Ours" table, C48."""
    resp = ir.Response(parts=[ir.Text("x")], finish=finish)
    assert gemini.render_response(resp, request())["candidates"][0]["finishReason"] == wire


def test_another_familys_reasoning_signature_survives_a_gemini_client_round_trip() -> None:
    """A Claude signature rides in a base64 carrier the SDK accepts, and comes back as Claude's."""
    resp = ir.Response(parts=[ir.Reasoning(text="t", signature="EqQBCkYIBxgCKkD/+", family="claude"), ir.Text("a")])
    body = gemini.render_response(resp, request(model="claude-sonnet-4-5"))
    sdk = genai.GenerateContentResponse.model_validate(body)
    echoed = sdk.model_dump(mode="json", by_alias=True, exclude_none=True)["candidates"][0]["content"]
    req = gemini.parse_request({"contents": [{"role": "user", "parts": [{"text": "q"}]}, echoed]}, "claude-sonnet-4-5")
    assert req.messages[1].parts == [
        ir.Reasoning(text="t", signature="EqQBCkYIBxgCKkD/+", family="claude"),
        ir.Text("a"),
    ]


def test_a_carrier_is_read_in_both_base64_alphabets() -> None:
    carried = gemini.carry_signature("responses", "gAAAA+/=", redacted=True)
    urlsafe = base64.urlsafe_b64encode(base64.b64decode(carried)).decode()
    assert gemini.read_signature(carried) == gemini.read_signature(urlsafe) == ("responses", "gAAAA+/=", True)
    assert gemini.read_signature("CiQBnative") == ("gemini", "CiQBnative", False)
    assert not gemini.is_gemini_signature(carried)


# --- client side: streams ---------------------------------------------------------------------


def _text_events(*pieces: str, finish: ir.Finish | None = None) -> list[ir.Event]:
    events: list[ir.Event] = [ir.Start(id="resp-9", model="gpt-5")]
    events += [ir.TextDelta(p) for p in pieces]
    events.append(ir.UsageUpdate(ir.Usage(input_tokens=12, output_tokens=5, total_tokens=17)))
    events.append(ir.End(finish or ir.Finish("stop")))
    return events


def test_an_sse_stream_is_data_frames_whose_final_one_carries_finish_and_usage() -> None:
    """C5, R17."""
    chunks = sse_payloads(render_stream(_text_events("Hello", ", world"), model="gemini-2.5-flash"))
    for chunk in chunks:
        genai.GenerateContentResponse.model_validate(chunk)
        assert (chunk["modelVersion"], chunk["responseId"]) == ("gemini-2.5-flash", "resp-9")
    assert texts(chunks) == "Hello, world"
    assert "finishReason" not in chunks[0]["candidates"][0]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"] == {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17}


def test_a_stream_without_an_end_still_finishes_with_a_stop_chunk() -> None:
    """R17."""
    renderer = gemini_stream.StreamRenderer(request(), sse=True)
    out = renderer.feed(ir.TextDelta("hi")) + renderer.finish()
    assert sse_payloads(out)[-1]["candidates"][0]["finishReason"] == "STOP"
    assert renderer.finish() == b""


def test_without_alt_the_stream_is_one_json_array_written_as_it_goes() -> None:
    """C6, R14."""
    renderer = gemini_stream.StreamRenderer(request(), sse=False)
    pieces = [renderer.feed(e) for e in _text_events("Once", " upon", " a time")] + [renderer.finish()]
    assert pieces[0] == b"" and pieces[1].startswith(b"[{") and pieces[2].startswith(b",{")
    assert pieces[-1] == b"]"
    chunks = orjson.loads(b"".join(pieces))
    assert isinstance(chunks, list) and texts(chunks) == "Once upon a time"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_an_empty_array_stream_is_still_valid_json() -> None:
    renderer = gemini_stream.StreamRenderer(request(), sse=False)
    out = renderer.feed(ir.End(ir.Finish("stop"))) + renderer.finish()
    assert orjson.loads(out)[0]["candidates"][0]["content"]["parts"] == [{"text": ""}]


def test_a_length_stop_from_any_upstream_is_max_tokens() -> None:
    """C48."""
    chunks = sse_payloads(render_stream(_text_events("cut", finish=ir.Finish("length", native="length"))))
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"


@pytest.mark.parametrize("sse", [True, False])
def test_a_mid_stream_error_is_a_google_error_in_either_framing(sse: bool) -> None:
    """C55, R15."""
    events = [
        ir.Start(id="r"),
        ir.TextDelta("partial"),
        ir.StreamError(status=529, message="Overloaded"),
        ir.TextDelta("late"),
    ]
    out = render_stream(events, sse=sse)
    error = {"error": {"code": 529, "message": "Overloaded", "status": "INTERNAL"}}
    if sse:
        assert sse_payloads(out)[-1] == error
    else:
        chunks = orjson.loads(out)
        assert chunks[-1] == error and texts(chunks[:-1]) == "partial"
        assert out.endswith(b"]") and out.count(b"]") == out.count(b"[")


def test_a_tool_call_is_sent_whole_when_it_ends() -> None:
    events: list[ir.Event] = [
        ir.Start(id="r"),
        ir.ToolCallStart(0, "toolu_1", "get_weather"),
        ir.ToolCallDelta(0, '{"city": '),
        ir.ToolCallStart(1, "toolu_2", "get_time"),
        ir.ToolCallDelta(1, "{}"),
        ir.ToolCallDelta(0, '"Paris"}'),
        ir.ToolCallEnd(0),
        ir.End(ir.Finish("tool_calls")),
    ]
    renderer = gemini_stream.StreamRenderer(request(), sse=True)
    outputs = [renderer.feed(e) for e in events]
    assert outputs[:6] == [b""] * 6
    calls = [
        p["functionCall"]
        for c in sse_payloads(b"".join(outputs))
        for p in c["candidates"][0]["content"]["parts"]
        if "functionCall" in p
    ]
    assert calls == [
        {"name": "get_weather", "args": {"city": "Paris"}, "id": "toolu_1"},
        {"name": "get_time", "args": {}, "id": "toolu_2"},
    ]


def test_reasoning_streams_as_thought_parts_with_signatures_where_gemini_expects_them() -> None:
    events: list[ir.Event] = [
        ir.Start(id="r"),
        ir.ReasoningDelta("let me think"),
        ir.ReasoningDone(signature="c2ln", family="gemini"),
        ir.TextDelta("answer"),
        ir.ReasoningDelta("more"),
        ir.ReasoningDone(signature="EqQB", family="claude"),
        ir.ImageOutput(data="iVBOR"),
        ir.End(ir.Finish("stop")),
    ]
    parts = [p for c in sse_payloads(render_stream(events)) for p in c["candidates"][0]["content"]["parts"]]
    assert parts[:3] == [
        {"text": "let me think", "thought": True},
        {"text": "answer", "thoughtSignature": "c2ln"},
        {"text": "more", "thought": True},
    ]
    assert parts[3]["thought"] is True and gemini.read_signature(parts[3]["thoughtSignature"]) == (
        "claude",
        "EqQB",
        False,
    )
    assert parts[4] == {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}}


def test_a_recorded_gemini_stream_renders_back_to_an_equivalent_stream() -> None:
    out = render_stream(parse_stream(fixture("stream_thoughts_two_calls.sse")))
    again = aggregate(parse_stream(out)).response
    original = aggregate(parse_stream(fixture("stream_thoughts_two_calls.sse"))).response
    assert again.parts == original.parts
    assert again.usage == original.usage and again.finish.reason == "tool_calls"


def _weather(city: str, unit: str = "celsius") -> str:
    """Weather for a city."""
    return "sunny"


class _SdkGateway:
    """Answers the google-genai SDK through this dialect alone (an in-process httpx transport)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, ir.Request]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        action = request.url.path.rsplit(":", 1)[1]
        model = request.url.path.split("/models/")[1].split(":")[0]
        req = gemini.parse_request(orjson.loads(request.content), model, stream=action == "streamGenerateContent")
        self.requests.append((action, req))
        if action == "countTokens":
            return httpx.Response(200, json=gemini.count_tokens_response(11))
        call = ir.ToolCall(id="", name="_weather", arguments='{"city": "Paris"}', signature="c2lnMg==")
        thought = ir.Reasoning(text="Need the tool.", signature="c2lnMQ==", family="gemini")
        done = any(isinstance(p, ir.ToolResult) for m in req.messages for p in m.parts)
        parts: list[ir.Part] = [ir.Text("It is sunny.")] if done else [thought, call]
        if action == "streamGenerateContent":
            renderer = gemini_stream.StreamRenderer(req, sse=request.url.params.get("alt") == "sse")
            events: list[ir.Event] = [ir.Start(id="s1"), ir.TextDelta("It is "), ir.TextDelta("sunny.")]
            body = b"".join(renderer.feed(e) for e in [*events, ir.End(ir.Finish("stop"))]) + renderer.finish()
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        resp = ir.Response(id="r1", parts=parts, finish=ir.Finish("stop" if done else "tool_calls"))
        return httpx.Response(200, json=gemini.render_response(resp, req))


def test_the_google_genai_sdk_speaks_to_this_dialect_end_to_end() -> None:
    """The official SDK's bodies parse, and our answers, streams and token counts parse in the SDK."""
    gateway = _SdkGateway()
    options = genai.HttpOptions(
        base_url="http://gateway.test", httpx_client=httpx.Client(transport=httpx.MockTransport(gateway))
    )
    client = google_genai.Client(api_key="k", http_options=options)
    config = genai.GenerateContentConfig(
        system_instruction="Be brief.",
        tools=[_weather],
        thinking_config=genai.ThinkingConfig(thinking_budget=512, include_thoughts=True),
        automatic_function_calling=genai.AutomaticFunctionCallingConfig(disable=True),
    )
    chat = client.chats.create(model="gemini-2.5-flash", config=config)
    first = chat.send_message("Weather in Paris?")
    assert first.function_calls and first.function_calls[0].args == {"city": "Paris"}
    second = chat.send_message(genai.Part.from_function_response(name="_weather", response={"result": "sunny"}))
    assert second.text == "It is sunny."
    streamed = "".join(
        c.text or "" for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")
    )
    assert streamed == "It is sunny."
    assert client.models.count_tokens(model="gemini-2.5-flash", contents="hi").total_tokens == 11
    action, replay = gateway.requests[1]
    assert action == "generateContent" and replay.top_level_system()[0].parts == [ir.Text("Be brief.")]
    assert replay.thinking == ir.Thinking(mode="budget", budget=512, include_thoughts=True)
    assert replay.tools[0].parameters["required"] == ["city"]
    reasoning, call = replay.messages[1].parts
    assert reasoning == ir.Reasoning(text="Need the tool.", signature="c2lnMQ==", family="gemini")
    assert isinstance(call, ir.ToolCall) and call.signature == "c2lnMg=="
    result = replay.messages[2].parts[0]
    assert isinstance(result, ir.ToolResult) and (result.call_id, result.content) == (call.id, [ir.Text("sunny")])


# --- errors, listings, token counts -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "rpc"),
    [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (409, "ABORTED"),
        (429, "RESOURCE_EXHAUSTED"),
        (499, "CANCELLED"),
        (500, "INTERNAL"),
        (501, "UNIMPLEMENTED"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
        (418, "INVALID_ARGUMENT"),
        (529, "INTERNAL"),
    ],
)
def test_errors_use_googles_envelope_with_the_rpc_status_of_the_http_code(status: int, rpc: str) -> None:
    """C54, C58, R15."""
    assert gemini.error_body(status, "nope") == {"error": {"code": status, "message": "nope", "status": rpc}}


def test_an_error_can_name_its_own_rpc_status_and_be_sent_mid_stream() -> None:
    assert gemini.error_body(400, "x", "FAILED_PRECONDITION")["error"]["status"] == "FAILED_PRECONDITION"
    assert (
        gemini.stream_error(503, "busy") == b'data: {"error":{"code":503,"message":"busy","status":"UNAVAILABLE"}}\n\n'
    )


def test_the_message_of_an_upstream_google_error_is_extracted_for_other_clients() -> None:
    """C53: the Google body is re-wrapped, not passed through."""
    raw = fixture("error_400.json")
    message = load("error_400.json")["error"]["message"]
    assert gemini.error_message(raw) == gemini.error_message(orjson.loads(raw)) == message
    assert gemini.error_message([orjson.loads(raw)]) == message
    assert gemini.error_message(b"upstream exploded") == "upstream exploded"


def test_count_tokens_answers_in_geminis_shape() -> None:
    """C57, §5."""
    assert gemini.count_tokens_response(42) == {
        "totalTokens": 42,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 42}],
    }


def test_model_listings_name_models_with_their_prefix() -> None:
    """C58, §1.7."""
    listing = gemini.models_list(["gemini-2.5-pro", "my-alias"])
    assert [m["name"] for m in listing["models"]] == ["models/gemini-2.5-pro", "models/my-alias"]
    entry = gemini.model_entry("models/gemini-2.5-pro", input_token_limit=1048576, output_token_limit=65536)
    assert entry == {
        "name": "models/gemini-2.5-pro",
        "displayName": "models/gemini-2.5-pro",
        "description": "models/gemini-2.5-pro",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    }
    assert gemini.strip_models_prefix("models/x") == "x"


# --- purity -----------------------------------------------------------------------------------

_STDLIB = {"__future__", "base64", "binascii", "collections", "copy", "dataclasses", "datetime", "hashlib", "re"}
_STDLIB |= {"secrets", "typing"}


@pytest.mark.parametrize("module", ["gemini.py", "gemini_stream.py", "gemini_schema.py"])
def test_the_dialect_modules_import_nothing_but_the_standard_library_orjson_and_the_ir(module: str) -> None:
    source = (Path(gemini.__file__).parent / module).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    outside = {n for n in imported if n.split(".")[0] not in _STDLIB | {"orjson"}}
    assert {n for n in outside if not n.startswith(("gateway.ir", "gateway.thinking", "gateway.dialects"))} == set()
